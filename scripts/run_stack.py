"""`make run-stack`: Prometheus + Alertmanager + `opsmedic run`, on loopback, to try them.

Renders the shipped deploy/prometheus/*.yml into a directory (only ports, the token file
and the intervals change), writes a fresh bearer token there (mode 600), starts
prometheus-alertmanager, `opsmedic run` (with OPSMEDIC_AUTH__TOKENS set to that token) and
prometheus on free loopback ports, prints their URLs and waits. Ctrl-C (or SIGTERM, or any
of them exiting) stops all three by pid. State (stack.json: URLs and pids) and logs stay in
the directory. Options: `python scripts/run_stack.py --help`; arguments after `--` go to
`opsmedic run` (e.g. `-- --mode heal`). OPSMEDIC_* settings in the environment apply.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "prometheus"
RULES = "opsmedic-rules.yml"
TOKEN_FILE = "opsmedic.token"
SHIPPED_OPSMEDIC = "127.0.0.1:8765"
SHIPPED_ALERTMANAGER = "127.0.0.1:9093"
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replace(text: str, swaps: dict[str, str], name: str) -> str:
    """Each `old` must occur in the shipped file: a renamed key fails here, not silently."""
    for old, new in swaps.items():
        if old not in text:
            raise SystemExit(f"{name}: {old!r} not found; update scripts/run_stack.py")
        text = text.replace(old, new)
    return text


def render(out: Path, opsmedic: int, alertmanager: int, interval_s: float) -> None:
    """The shipped files, for these loopback ports and evaluation/notification interval."""
    every = f"{interval_s:g}s"
    prom = (DEPLOY / "prometheus.yml").read_text()
    prom = replace(prom, {
        f'["{SHIPPED_OPSMEDIC}"]': f'["127.0.0.1:{opsmedic}"]',
        f'["{SHIPPED_ALERTMANAGER}"]': f'["127.0.0.1:{alertmanager}"]',
        "scrape_interval: 15s": f"scrape_interval: {every}",
        "evaluation_interval: 15s": f"evaluation_interval: {every}",
    }, "prometheus.yml")  # fmt: skip
    am = (DEPLOY / "alertmanager.yml").read_text()
    am = replace(am, {
        f"http://{SHIPPED_OPSMEDIC}/": f"http://127.0.0.1:{opsmedic}/",
        "group_wait: 10s": f"group_wait: {every}",
        "group_interval: 1m": f"group_interval: {every}",
    }, "alertmanager.yml")  # fmt: skip
    (out / "prometheus.yml").write_text(prom)
    (out / "alertmanager.yml").write_text(am)
    shutil.copyfile(DEPLOY / RULES, out / RULES)


@dataclass
class Stack:
    root: Path
    interval_s: float = 15.0
    opsmedic_args: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        token_path = self.root / TOKEN_FILE
        token_path.touch(mode=0o600)
        token_path.write_text(token)
        self.ports = {n: free_port() for n in ("opsmedic", "prometheus", "alertmanager")}
        render(self.root, self.ports["opsmedic"], self.ports["alertmanager"], self.interval_s)
        self._check(["promtool", "check", "config", str(self.root / "prometheus.yml")])
        env = {**os.environ, "OPSMEDIC_AUTH__TOKENS": token,
               "OPSMEDIC_HTTP__HOST": "127.0.0.1",
               "OPSMEDIC_HTTP__PORT": str(self.ports["opsmedic"])}  # fmt: skip
        env.setdefault("OPSMEDIC_DATA_DIR", str(self.root / "opsmedic-data"))
        r, urls = self.root, self.urls()
        self._spawn("alertmanager", [
            "prometheus-alertmanager", f"--config.file={r}/alertmanager.yml",
            f"--storage.path={r}/alertmanager-data", "--cluster.listen-address=",
            f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}",
        ])  # fmt: skip
        self._spawn("opsmedic", [sys.executable, "-m", "mcp_server", "run", *self.opsmedic_args],
                    env=env)  # fmt: skip
        self._spawn("prometheus", [
            "prometheus", f"--config.file={r}/prometheus.yml", f"--storage.tsdb.path={r}/tsdb",
            f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
        ])  # fmt: skip
        self._wait_ready({
            "alertmanager": urls["alertmanager"] + "/-/ready",
            "opsmedic": urls["opsmedic"] + "/healthz",
            "prometheus": urls["prometheus"] + "/-/ready",
        })  # fmt: skip
        state = {"urls": urls, "pids": {n: p.pid for n, p in self.procs.items()},
                 "token_file": str(token_path), "dir": str(self.root)}  # fmt: skip
        (self.root / "stack.json").write_text(json.dumps(state, indent=1))

    def _check(self, command: list[str]) -> None:
        if shutil.which(command[0]) is None:
            raise SystemExit(f"{command[0]} is not installed: run `make deps`")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        if shutil.which(command[0]) is None:
            raise SystemExit(f"{command[0]} is not installed: run `make deps`")
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop them in order
            )

    def _wait_ready(self, probes: dict[str, str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = dict(probes)
        while waiting:
            for name, url in list(waiting.items()):
                self.exited()
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
                    del waiting[name]  # a 2xx answer (a 503 raises)
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready after {READY_TIMEOUT_S:.0f} s: {sorted(waiting)}; "
                                 f"logs in {self.root}")  # fmt: skip
            time.sleep(0.2)

    def exited(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with code {proc.returncode}; see "
                                 f"{self.root / (name + '.log')}")  # fmt: skip

    def stop(self) -> None:
        """SIGTERM each (Prometheus first, OpsMedic last), SIGKILL what is left after 20 s."""
        for name in ("prometheus", "alertmanager", "opsmedic"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where configs, data and logs go (temp dir)")
    parser.add_argument(
        "--interval", type=float, default=5.0,
        help="scrape / evaluation interval and Alertmanager grouping in seconds (5)",
    )  # fmt: skip
    parser.add_argument("opsmedic_args", nargs="*", help="after --: arguments of opsmedic run")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="opsmedic-stack-"))
    stack = Stack(root.resolve(), args.interval, args.opsmedic_args)

    def stop_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job ignores it
        signal.signal(signum, stop_signal)
    try:
        stack.start()
        urls = stack.urls()
        print(f"OpsMedic      {urls['opsmedic']}/  (dashboard; API/metrics need the token)")
        print(f"Prometheus    {urls['prometheus']}/alerts")
        print(f"Alertmanager  {urls['alertmanager']}/")
        print(f"token         {root / TOKEN_FILE}    logs and state in {root}")
        print("Ctrl-C stops all three.", flush=True)
        while True:
            stack.exited()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    except SystemExit as exc:
        print(f"run-stack: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
