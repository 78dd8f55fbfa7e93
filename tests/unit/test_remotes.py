"""`opsmedic run --url U1 --token T1 --url U2 --token T2`: pairing, env tokens, clear errors."""

from __future__ import annotations

import pytest

from agent_runner.remotes import Remote, remotes
from mcp_server.__main__ import build_parser
from mcp_server.errors import ConfigError

A, B = "http://127.0.0.1:8001/mcp", "https://ops.example:8443/mcp"


def test_tokens_pair_with_urls_in_order_or_one_for_all() -> None:
    assert remotes([A, B], ["t1", "t2"]) == [Remote(A, "t1"), Remote(B, "t2")]
    assert remotes([A, B], ["shared"]) == [Remote(A, "shared"), Remote(B, "shared")]
    assert remotes([A], []) == [Remote(A, None)]
    assert remotes([], []) == []
    assert [r.name for r in remotes([A, B], [])] == ["127.0.0.1:8001", "ops.example:8443"]


def test_a_token_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_B_TOKEN", "from-env")
    assert remotes([A, B], ["t1", "env:OPS_B_TOKEN"])[1].token == "from-env"
    monkeypatch.delenv("OPS_B_TOKEN")
    with pytest.raises(ConfigError, match="OPS_B_TOKEN is not set"):
        remotes([A, B], ["t1", "env:OPS_B_TOKEN"])


@pytest.mark.parametrize(
    ("urls", "tokens", "says"),
    [
        ([A, B, "http://127.0.0.1:9/mcp"], ["t1", "t2"], "one --token per --url"),
        ([], ["t"], "--token is for --url"),
        (["127.0.0.1:8001"], [], "expected http"),
        ([A, A], [], "given twice"),
    ],
)
def test_bad_pairings_say_how_to_fix_them(urls: list[str], tokens: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        remotes(urls, tokens)


def test_the_token_never_shows_in_a_repr() -> None:
    assert "secret-token" not in repr(Remote(A, "secret-token"))


def test_cli_takes_repeated_url_and_token() -> None:
    args = build_parser().parse_args(
        ["run", "--url", A, "--token", "t1", "--url", B, "--token", "t2"]
    )
    assert args.url == [A, B] and args.token == ["t1", "t2"]
