"""One runner across servers: `opsmedic run --url A --token TA --url B --token env:TB` drives
two real `opsmedic serve --http` processes (each its own store and bearer token) watching a
real Docker engine; a crash on each is triaged by the one runner, and each server's own audit
holds what the runner did there."""

from __future__ import annotations

import contextlib
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import OPSMEDIC, REPO, clean_env, free_port, http_server, wait_until

TOKENS = {"a": "token-for-server-a-0123456789", "b": "token-for-server-b-9876543210"}
CRASH = "sleep 1; echo 'fatal: cannot open config' >&2; exit 3"


def _get(base: str, token: str, path: str) -> Any:
    r = httpx.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def _triaged(base: str, token: str, target: str) -> dict[str, Any] | None:
    rows = [i for i in _get(base, token, "/api/incidents?status=all")["incidents"]
            if i["target"] == target]  # fmt: skip
    if not rows:
        return None
    detail = _get(base, token, f"/api/incidents/{rows[0]['id']}")
    return detail if detail["rca"] else None


def test_one_runner_triages_a_crash_on_each_of_two_servers(
    tmp_path: Path, docker_host: str, docker_env: Any
) -> None:
    servers: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name, token in TOKENS.items():
            data = tmp_path / f"server-{name}"
            data.mkdir()
            env = {"OPSMEDIC_AUTH__TOKENS": token, "DOCKER_HOST": docker_host,
                   "OPSMEDIC_POLICY__SELECTOR": f"fleet={name}",
                   "OPSMEDIC_INSTANCE": name}  # fmt: skip
            servers[name], _ = stack.enter_context(http_server(data, **env))
        boxes = {n: docker_env.run(f"crash-{n}", CRASH, labels={"fleet": n}) for n in TOKENS}
        log_path = tmp_path / "runner.log"
        argv = [*OPSMEDIC, "run", "--mode", "check", "--no-http",
                "--url", servers["a"] + "/mcp", "--token", TOKENS["a"],
                "--url", servers["b"] + "/mcp", "--token", "env:SERVER_B_TOKEN"]  # fmt: skip
        env = clean_env(OPSMEDIC_DATA_DIR=str(tmp_path / "runner"), SERVER_B_TOKEN=TOKENS["b"])
        with open(log_path, "wb") as log:
            runner = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        stack.callback(_stop, runner)
        found = {}
        for name, token in TOKENS.items():
            target = f"container:{boxes[name].name}"
            try:
                found[name] = wait_until(partial(_triaged, servers[name], token, target), 90)
            except TimeoutError:
                raise AssertionError(log_path.read_text()[-4000:]) from None
        for name, token in TOKENS.items():
            inc, rca = found[name]["incident"], found[name]["rca"]
            assert inc["instance"] == name and rca["category"] == "config"
            assert any("triage started" in t["text"] for t in inc["timeline"])
            audit = _get(servers[name], token, "/api/audit?limit=1000")
            assert audit["chain"]["ok"]
            rcas = [e for e in audit["entries"] if e["tool"] == "record_rca"]
            assert inc["id"] in {e["incident_id"] for e in rcas}  # this server's own audit
            assert {e["instance"] for e in audit["entries"]} == {name}
        text = log_path.read_text()
        assert "runner started for 2 servers" in text
        assert TOKENS["a"] not in text and TOKENS["b"] not in text
        _stop(runner)
        away = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens: reported, not fatal
        once = [*argv, "--once", "--url", away, "--token", "t"]
        done = subprocess.run(once, env=env, capture_output=True, text=True, cwd=REPO, timeout=180)
        reports = done.stdout.split("== ")
        assert done.returncode == 1, done.stdout + done.stderr[-3000:]  # incidents stay open
        for name, box in boxes.items():
            [report] = [r for r in reports if r.startswith(servers[name])]
            assert f"container:{box.name}" in report, done.stdout
        assert any(r.startswith(away) and "unreachable" in r for r in reports), done.stdout


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
