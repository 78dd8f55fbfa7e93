"""Settings: env beats file, lists from commas, and one-line errors naming the key."""

from __future__ import annotations

import pytest

from mcp_server.errors import ConfigError
from mcp_server.settings import load_settings


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("OPSMEDIC_"):
            monkeypatch.delenv(key)


def test_defaults():
    s = load_settings()
    assert s.mode == "check" and s.http.host == "127.0.0.1" and s.http.port == 8765
    assert s.policy.selector == "opsmedic.managed=true"
    assert s.resolved_store_url.startswith("sqlite:///")


def test_env_nested_and_csv(monkeypatch):
    monkeypatch.setenv("OPSMEDIC_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("OPSMEDIC_POLICY__APPROVE", "restart, clean_disk")
    monkeypatch.setenv("OPSMEDIC_LOG_ROOTS", "/var/log/a,/var/log/b")
    s = load_settings()
    assert s.smtp.host == "127.0.0.1"
    assert s.policy.approve == ["restart", "clean_disk"]
    assert s.log_roots == ["/var/log/a", "/var/log/b"]


def test_toml_file_and_env_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "opsmedic.toml"
    cfg.write_text('mode = "heal"\n[http]\nport = 9000\n[smtp]\nhost = "mail.test"\n')
    monkeypatch.setenv("OPSMEDIC_HTTP__PORT", "9100")
    s = load_settings(cfg)
    assert s.mode == "heal" and s.smtp.host == "mail.test"
    assert s.http.port == 9100  # env beats the file


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OPSMEDIC_MODE": "yolo"}, "OPSMEDIC_MODE='yolo' is invalid"),
        ({"OPSMEDIC_HTTP__PORT": "eighty"}, "OPSMEDIC_HTTP__PORT='eighty' is invalid"),
        ({"OPSMEDIC_SMTP__TLS": "ssl"}, "OPSMEDIC_SMTP__TLS"),
        ({"OPSMEDIC_POLICY__SELECTR": "x"}, "did you mean OPSMEDIC_POLICY__SELECTOR"),
        ({"OPSMEDIC_MOED": "heal"}, "OPSMEDIC_MOED is unknown"),
    ],
)
def test_bad_values_give_one_line(monkeypatch, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert expected in text and "\n" not in text


def test_unknown_toml_key(tmp_path):
    cfg = tmp_path / "opsmedic.toml"
    cfg.write_text("[smtp]\nhots = 'x'\n")
    with pytest.raises(ConfigError, match=r"\[smtp\] 'hots' is unknown"):
        load_settings(cfg)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("mode = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_errors_never_echo_secret_values(monkeypatch):
    monkeypatch.setenv("OPSMEDIC_SECRET", "tooshort")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "OPSMEDIC_SECRET" in str(err.value) and "tooshort" not in str(err.value)
