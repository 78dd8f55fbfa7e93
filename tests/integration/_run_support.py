"""`opsmedic run` as a real subprocess, read through its HTTP API; Docker engine facts."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.helpers import OPSMEDIC, REPO, clean_env, free_port, wait_until

MANAGED = {"opsmedic.managed": "true"}
#: Fast but real healing policy for tests: verify for 1 s, short backoff, reconcile often.
FAST_POLICY = {
    "OPSMEDIC_POLICY__VERIFY_STABLE_S": "1",
    "OPSMEDIC_POLICY__VERIFY_TIMEOUT_S": "15",
    "OPSMEDIC_POLICY__BASE_DELAY_S": "0.5",
    "OPSMEDIC_POLICY__MAX_RESTARTS": "20",
    "OPSMEDIC_POLICY__RECONCILE_S": "2",
}


class OpsRun:
    """One `opsmedic run` process with its own HTTP port; stopped by pid in close()."""

    def __init__(self, tmp: Path, name: str, *args: str, data_dir: Path | None = None,
                 **env: str) -> None:  # fmt: skip
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir or tmp / f"data-{name}"
        self.log_path = tmp / f"{name}.log"
        self.args = args or ("--mode", "heal")
        self.env = clean_env(
            OPSMEDIC_DATA_DIR=str(self.data_dir), OPSMEDIC_HTTP__PORT=str(self.port), **env
        )
        self.proc: subprocess.Popen[bytes] | None = None
        token = env.get("OPSMEDIC_AUTH__TOKENS", "").split(",")[0]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def start(self) -> OpsRun:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([*OPSMEDIC, "run", *self.args], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
        log.close()
        wait_until(self._up, timeout=60)
        return self

    def _up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
        try:
            httpx.get(self.base + "/healthz", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    def get(self, path: str) -> Any:
        return httpx.get(self.base + path, headers=self.headers, timeout=10).json()

    def incidents(self, target: str | None = None) -> list[dict[str, Any]]:
        rows = self.get("/api/incidents?status=all&limit=200")["incidents"]
        return [r for r in rows if target is None or r["target"] == target]

    def incident(self, incident_id: int) -> dict[str, Any]:
        return dict(self.get(f"/api/incidents/{incident_id}")["incident"])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


def cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPSMEDIC, *args], env=clean_env(OPSMEDIC_DATA_DIR=str(data_dir), **env),
                          capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip


def engine_events(client: docker.DockerClient, name: str, since: float) -> list[dict[str, Any]]:
    """The engine's own record of a container's lifecycle events since `since` (Unix s)."""
    until = datetime.now().timestamp() + 0.1
    raw = client.api.events(since=since, until=until, decode=True,
                            filters={"container": name, "type": "container"})  # fmt: skip
    return [e for e in raw if e.get("Action") in ("start", "die", "kill", "restart")]


def state(client: docker.DockerClient, name: str) -> dict[str, Any]:
    return dict(client.api.inspect_container(name)["State"])
