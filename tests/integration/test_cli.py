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


def test_operator_views_against_a_real_store(tmp_path):
    import asyncio

    from mcp_server.models import AuditDraft, Job, Rca
    from mcp_server.store.sqlite import SqliteStore

    async def fill() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'opsmedic.db'}")
        await store.open()
        inc, _ = await store.open_incident("container:web", "died", "web exited with code 3")
        await store.put_rca(Rca(incident_id=inc.id, summary="db down", category="dependency"))
        await store.upsert_job(Job(id="invoice-bot", bot="invoices", status="failed"))
        await store.append_audit(
            AuditDraft(actor="t", transport="cli", tool="probe-tool", outcome="ok")
        )
        await store.close()

    asyncio.run(fill())
    env = {"OPSMEDIC_DATA_DIR": str(tmp_path)}
    status = run("status", **env)
    assert status.returncode == 1 and "1 open" in status.stdout  # something is unhealthy
    listed = run("incidents", "--open", **env)
    assert "container:web" in listed.stdout and "STATUS" in listed.stdout
    one = run("incident", "1", **env)
    assert "db down" in one.stdout and "timeline" in one.stdout
    assert "invoice-bot" in run("jobs", **env).stdout
    assert "probe-tool" in run("audit", "tail", **env).stdout
    assert run("incident", "99", **env).returncode == 1
    checked = run("config", "check", **env, OPSMEDIC_SMTP__PASSWORD="hunter2-secret")
    assert checked.returncode == 0 and "hunter2-secret" not in checked.stdout
