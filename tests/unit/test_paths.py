"""Path containment against real directories and symlinks in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_server.errors import InvalidInput, Refused
from mcp_server.safety.paths import CLEAN_ROOTS, LOG_ROOTS, is_within, resolve_under_roots


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "logs"
    (root / "app").mkdir(parents=True)
    (root / "app" / "app.log").write_text("hello\n")
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "secret.txt").write_text("do not read\n")
    (tmp_path / "logs-other").mkdir()
    (tmp_path / "logs-other" / "x.log").write_text("x\n")
    return {"root": root, "canary": canary, "tmp": tmp_path}


def test_file_inside_a_root_resolves_to_its_real_path(tree: dict[str, Path]) -> None:
    got = resolve_under_roots(str(tree["root"] / "app" / "app.log"), [str(tree["root"])])
    assert got == (tree["root"] / "app" / "app.log").resolve()


def test_missing_file_inside_a_root_is_allowed(tree: dict[str, Path]) -> None:
    # existence is the reader's business (NotFound), containment is ours
    got = resolve_under_roots(str(tree["root"] / "nope.log"), [str(tree["root"])])
    assert got.name == "nope.log"


def test_traversal_is_refused_even_when_it_lands_inside(tree: dict[str, Path]) -> None:
    root = str(tree["root"])
    for path in (f"{root}/../canary/secret.txt", f"{root}/app/../app/app.log"):
        with pytest.raises(Refused, match=r"'\.\.'") as exc:
            resolve_under_roots(path, [root])
        assert root in str(exc.value)  # names the allowed roots


def test_absolute_path_outside_is_refused(tree: dict[str, Path]) -> None:
    root = str(tree["root"])
    with pytest.raises(Refused, match="outside the allowed log roots") as exc:
        resolve_under_roots(str(tree["canary"] / "secret.txt"), [root])
    assert "OPSMEDIC_LOG_ROOTS" in str(exc.value)
    with pytest.raises(Refused):  # a sibling whose name merely starts with the root's name
        resolve_under_roots(str(tree["tmp"] / "logs-other" / "x.log"), [root])
    with pytest.raises(Refused):
        resolve_under_roots("/etc/passwd", [root])


def test_symlink_out_of_the_root_is_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "innocent.log").symlink_to(tree["canary"] / "secret.txt")
    (root / "dir-link").symlink_to(tree["canary"], target_is_directory=True)
    for path in (root / "innocent.log", root / "dir-link" / "secret.txt"):
        with pytest.raises(Refused, match="symlink"):
            resolve_under_roots(str(path), [str(root)])


def test_symlink_staying_inside_is_allowed(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "current.log").symlink_to(root / "app" / "app.log")
    got = resolve_under_roots(str(root / "current.log"), [str(root)])
    assert got == (root / "app" / "app.log").resolve()


def test_root_that_is_itself_a_symlink(tree: dict[str, Path]) -> None:
    link_root = tree["tmp"] / "varlog"
    link_root.symlink_to(tree["root"], target_is_directory=True)
    via_link = resolve_under_roots(str(link_root / "app" / "app.log"), [str(link_root)])
    via_real = resolve_under_roots(str(tree["root"] / "app" / "app.log"), [str(link_root)])
    assert via_link == via_real == (tree["root"] / "app" / "app.log").resolve()


def test_nul_relative_and_empty_are_invalid(tree: dict[str, Path]) -> None:
    root = str(tree["root"])
    with pytest.raises(InvalidInput, match="NUL"):
        resolve_under_roots(f"{root}/app.log\0.txt", [root])
    with pytest.raises(InvalidInput, match="relative"):
        resolve_under_roots("app/app.log", [root])
    with pytest.raises(InvalidInput, match="relative"):
        resolve_under_roots("~/app.log", [root])
    with pytest.raises(InvalidInput):
        resolve_under_roots("  ", [root])


def test_no_roots_configured_says_what_to_set() -> None:
    with pytest.raises(Refused) as exc:
        resolve_under_roots("/var/log/app/app.log", [])
    assert str(exc.value) == (
        "no log roots configured: set OPSMEDIC_LOG_ROOTS=/var/log/app,... to allow reading files"
    )
    with pytest.raises(Refused, match=r"OPSMEDIC_CLEAN_ROOTS=.* to allow cleaning files"):
        resolve_under_roots("/var/tmp/x", ["", "  "], CLEAN_ROOTS)
    assert LOG_ROOTS.env == "OPSMEDIC_LOG_ROOTS"


def test_clean_roots_wording(tree: dict[str, Path]) -> None:
    with pytest.raises(Refused, match=r"clean roots.*OPSMEDIC_CLEAN_ROOTS"):
        resolve_under_roots(str(tree["canary"] / "secret.txt"), [str(tree["root"])], CLEAN_ROOTS)


def test_several_roots(tree: dict[str, Path]) -> None:
    roots = [str(tree["root"]), str(tree["canary"])]
    assert resolve_under_roots(str(tree["canary"] / "secret.txt"), roots).name == "secret.txt"


def test_is_within(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert is_within(root, root)
    assert is_within(root / "a" / "b", root)
    assert not is_within(tree["tmp"] / "logs-other", root)
    assert not is_within(root / ".." / "canary", root)  # lexical mode never trusts '..'
    assert not is_within("/", root)
    assert is_within("/anything", "/")
    link = root / "out"
    link.symlink_to(tree["canary"], target_is_directory=True)
    assert is_within(link / "secret.txt", root)  # lexically inside ...
    assert not is_within(link / "secret.txt", root, resolve=True)  # ... really outside
    assert not is_within(f"{root}/a\0", root)
    assert is_within(os.fspath(root / "app"), str(root), resolve=True)
