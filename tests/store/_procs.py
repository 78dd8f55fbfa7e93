"""Start tests.store._worker processes, release them together, wait with deadlines."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


class Workers:
    """Several worker processes on one store, started at the same moment."""

    def __init__(self, tmp: Path, url: str, mode: str, count: int, concurrency: int, n: int):
        self.go = tmp / "go"
        self.ready = [tmp / f"ready-{i}" for i in range(n)]
        argv = [sys.executable, "-m", "tests.store._worker", url, mode, str(count)]
        self.procs = [
            subprocess.Popen(
                [*argv, str(concurrency), str(ready), str(self.go)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for ready in self.ready
        ]

    def release(self, timeout_s: float = 60) -> None:
        def all_ready() -> bool:
            crashed = [p for p in self.procs if p.poll() is not None]
            if crashed:
                raise AssertionError(f"worker exited early: {crashed[0].communicate()[1][-2000:]}")
            return all(r.exists() for r in self.ready)

        wait_until(all_ready, timeout_s, "workers to open the store")
        self.go.touch()

    def finish(self, timeout_s: float = 240) -> None:
        for proc in self.procs:
            out, err = proc.communicate(timeout=timeout_s)
            assert proc.returncode == 0, f"worker failed ({proc.returncode}): {err[-3000:]}"
            assert '"done"' in out

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
