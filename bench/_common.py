"""Shared bench helpers: a Docker engine (the one in DOCKER_HOST, or a private one) and stats."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@contextlib.contextmanager
def docker_engine() -> Iterator[str]:
    """Yield a DOCKER_HOST url: the environment's, or a throwaway engine started here."""
    host = os.environ.get("OPSMEDIC_TEST_DOCKER_HOST") or os.environ.get("DOCKER_HOST")
    if host:
        os.environ["DOCKER_HOST"] = host
        yield host
        return
    from tests.services import DockerEngine

    engine = DockerEngine()
    engine.start()
    os.environ["DOCKER_HOST"] = engine.host
    try:
        yield engine.host
    finally:
        engine.stop()


def describe(samples_s: Sequence[float]) -> str:
    """median / p95 / min / max in milliseconds."""
    ms = sorted(s * 1000 for s in samples_s)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"median {statistics.median(ms):8.1f} ms  p95 {p95:8.1f} ms  "
        f"min {ms[0]:7.1f}  max {ms[-1]:7.1f}  (n={len(ms)})"
    )
