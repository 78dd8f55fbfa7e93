"""Prometheus + Alertmanager as consumers of OpsMedic, for real, from the shipped
deploy/prometheus files, started by `make run-stack`'s own script (scripts/run_stack.py):
real prometheus 2.42, prometheus-alertmanager 0.25 and `opsmedic run` on loopback ports.

Only ports, the token file and the intervals (1 s here, a test-only speed-up) differ from
what users get. The real run: Prometheus scrapes /metrics with the bearer token, loads the
shipped rules, and when OpsMedic escalates an incident (a managed process that fails for
lack of disk space: not restart-safe, escalated), OpsMedicEscalation fires and reaches
OpsMedic through Alertmanager as an incident, diagnosed by the rules RCA.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.run_stack import DEPLOY, RULES, TOKEN_FILE, render
from tests.helpers import REPO, clean_env, wait_until

BINARIES = ("prometheus", "promtool", "prometheus-alertmanager", "amtool")
pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in BINARIES),
    reason="prometheus / prometheus-alertmanager missing: run scripts/install-deps.sh",
)
SHIPPED_ALERTS = re.findall(r"- alert: (\w+)", (DEPLOY / RULES).read_text())
#: Fails for lack of disk space once the test creates `go` (after Prometheus saw the 0).
FAILING = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.2)\n"
    "print('OSError: [Errno 28] No space left on device', flush=True)\n"
    "sys.exit(1)\n"
)


def _promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_shipped_files_are_valid_for_promtool_and_amtool(tmp_path):
    out = _promtool("check", "rules", str(DEPLOY / RULES))
    assert f"SUCCESS: {len(SHIPPED_ALERTS)} rules found" in out and len(SHIPPED_ALERTS) >= 7
    (tmp_path / TOKEN_FILE).write_text("t")
    render(tmp_path, opsmedic=18765, alertmanager=19093, interval_s=15)
    assert "1 rule files found" in _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    am = subprocess.run(["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert am.returncode == 0 and "1 receivers" in am.stdout, am.stdout + am.stderr
    shipped = (DEPLOY / "prometheus.yml").read_text()
    rendered = (tmp_path / "prometheus.yml").read_text()
    assert rendered == shipped.replace("8765", "18765").replace("9093", "19093")


class Stack:
    """scripts/run_stack.py as a subprocess; its stack.json says where everything is."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.root = tmp / "stack"
        self.log = open(tmp / "run-stack.log", "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "scripts/run_stack.py", "--dir", str(self.root),
                   "--interval", "1", "--", "--mode", "heal"]  # fmt: skip
        self.proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        self.state: dict[str, Any] = {}

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.tail()
            path = self.root / "stack.json"
            if path.exists():
                self.state = json.loads(path.read_text())
            return bool(self.state)

        wait_until(ready, timeout=120, interval=0.2)
        token = (self.root / TOKEN_FILE).read_text().strip()
        self.auth = {"Authorization": f"Bearer {token}"}

    def url(self, name: str) -> str:
        return str(self.state["urls"][name])

    def prom(self, query: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url("prometheus") + "/api/v1/query", params={"query": query}, timeout=10)
        return list(r.json()["data"]["result"])

    def opsmedic(self, path: str) -> Any:
        r = httpx.get(self.url("opsmedic") + path, headers=self.auth, timeout=10)
        r.raise_for_status()
        return r.json()

    def incidents(self) -> list[dict[str, Any]]:
        return list(self.opsmedic("/api/incidents?status=all&limit=200")["incidents"])

    def stop(self) -> int | None:
        """Ctrl-C, as a person would; then make sure (by pid) nothing is left running."""
        code = None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                code = self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for pid in self.state.get("pids", {}).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.log.close()
        return code

    def tail(self) -> str:
        texts = [self.root.parent / "run-stack.log", *sorted(self.root.glob("*.log"))]
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in texts)


def test_prometheus_scrapes_rules_fire_and_reach_opsmedic_as_an_incident(tmp_path):
    script, go = tmp_path / "w.py", tmp_path / "go"
    script.write_text(FAILING)
    config = tmp_path / "opsmedic.toml"
    config.write_text(f'[[processes]]\nname = "w"\nargv = ["{sys.executable}", "{script}", '
                      f'"{go}"]\n')  # fmt: skip
    env = clean_env(OPSMEDIC_CONFIG=str(config), OPSMEDIC_DATA_DIR=str(tmp_path / "data"))
    stack = Stack(tmp_path, env)
    try:
        stack.wait_ready()
        # scraped through the bearer token: Prometheus's own view of the target
        up = wait_until(lambda: stack.prom('up{job="opsmedic"} == 1'), timeout=60)
        assert up[0]["metric"]["instance"] == stack.url("opsmedic").removeprefix("http://")
        groups = httpx.get(stack.url("prometheus") + "/api/v1/rules", timeout=10).json()
        rules = [r for g in groups["data"]["groups"] for r in g["rules"]]
        assert sorted(r["name"] for r in rules) == sorted(SHIPPED_ALERTS)
        assert all(r["health"] == "ok" for r in rules), rules
        # the counter's 0 is in Prometheus (twice) before anything escalates
        seen = (
            "count_over_time(opsmedic_escalations_total[1m]) >= 2"
            " and on() opsmedic_escalations_total == 0"
        )
        wait_until(lambda: stack.prom(seen), timeout=60)
        go.touch()  # the process fails: incident -> rules RCA "resource" -> escalated

        def escalated() -> dict[str, Any] | None:
            rows = [i for i in stack.incidents() if i["target"] == "process:w"]
            return rows[0] if rows and rows[0]["status"] == "escalated" else None

        first = wait_until(escalated, timeout=90, interval=0.5)
        firing = 'ALERTS{alertname="OpsMedicEscalation", alertstate="firing"}'
        wait_until(lambda: stack.prom(firing), timeout=60, interval=0.5)

        def alert_incident() -> dict[str, Any] | None:
            rows = [i for i in stack.incidents() if i["target"] == "alert:OpsMedicEscalation"]
            return rows[0] if rows else None

        row = wait_until(alert_incident, timeout=60, interval=0.5)
        assert row["symptom"] == "alert:OpsMedicEscalation" and row["severity"] == "warning"
        detail = stack.opsmedic(f"/api/incidents/{row['id']}")
        inc = detail["incident"]
        assert inc["detail"]["source"] == "alertmanager"
        assert inc["detail"]["labels"]["job"] == "opsmedic"
        query = urllib.parse.unquote_plus(inc["detail"]["generator_url"])
        assert "increase(opsmedic_escalations_total[10m]) > 0" in query
        assert "incident(s) to a person" in inc["detail"]["annotations"]["summary"]

        def rca() -> dict[str, Any] | None:
            return stack.opsmedic(f"/api/incidents/{row['id']}")["rca"]

        got = wait_until(rca, timeout=60, interval=0.5)  # the runner's rules RCA
        assert "OpsMedicEscalation" in got["summary"] and "mapped to no target" in got["summary"]
        assert any(e["line"].startswith("generatorURL: ") for e in got["evidence"])
        # the health score, exported and scraped: the escalated process costs points
        scored = 'opsmedic_health_score{target="process:w"} < 100'
        assert wait_until(lambda: stack.prom(scored), timeout=30)
        assert stack.opsmedic("/api/overview")["health"]["overall"] < 100
        assert first["id"] != row["id"]
    except BaseException:
        print(stack.tail())
        raise
    finally:
        code = stack.stop()
    assert code == 0, stack.tail()
    for pid in stack.state["pids"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
