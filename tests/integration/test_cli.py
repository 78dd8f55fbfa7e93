"""The `opsmedic` command as a user runs it."""

from __future__ import annotations

import sqlite3
import subprocess

from tests.helpers import OPSMEDIC, REPO, clean_env


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPSMEDIC, *args],
        env=clean_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_and_version():
    assert "serve" in run("--help").stdout
    out = run("version")
    assert out.returncode == 0 and out.stdout.startswith("opsmedic ")


def test_bad_config_exits_2_with_one_line(tmp_path):
    out = run("audit", "verify", OPSMEDIC_DATA_DIR=str(tmp_path), OPSMEDIC_MODE="yolo")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "OPSMEDIC_MODE" in out.stderr
    assert "Traceback" not in out.stderr


def test_audit_verify_exit_codes(tmp_path):
    import asyncio

    from mcp_server.models import AuditDraft
    from mcp_server.store.sqlite import SqliteStore

    db = tmp_path / "opsmedic.db"

    async def fill() -> None:
        store = SqliteStore(f"sqlite:///{db}")
        await store.open()
        for i in range(5):
            await store.append_audit(
                AuditDraft(actor="t", transport="cli", tool=f"t{i}", outcome="ok")
            )
        await store.close()

    asyncio.run(fill())
    ok = run("audit", "verify", OPSMEDIC_DATA_DIR=str(tmp_path))
    assert ok.returncode == 0 and "5 entries" in ok.stdout
    con = sqlite3.connect(db)
    triggers = [r[0] for r in con.execute("select name from sqlite_master where type='trigger'")]
    for name in triggers:
        con.execute(f"drop trigger {name}")
    con.execute("update audit set tool='forged' where seq=3")
    con.commit()
    con.close()
    bad = run("audit", "verify", OPSMEDIC_DATA_DIR=str(tmp_path))
    assert bad.returncode == 1 and "seq 3" in bad.stdout
