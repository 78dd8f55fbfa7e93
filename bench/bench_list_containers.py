"""DockerEngine.list_containers beside `docker ps -a` and docker-py's containers.list().

Usage: python bench/bench_list_containers.py [--containers 50] [--runs 50]
Uses the engine at DOCKER_HOST when set (it creates and then removes labelled busybox
containers there, network none); otherwise starts a private engine with tests.services and
stops it afterwards. Prints median and p95 per method, and the characters per container of
the default text view an LLM reads. Prints numbers only; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.services, run as a file

from mcp_server.backends.docker.engine import DockerEngine
from mcp_server.backends.docker.format import ContainerSummary, render_summaries
from tests.services import DockerEngine as PrivateEngine
from tests.services import ensure_busybox_image


@contextlib.contextmanager
def engine_host() -> Iterator[str]:
    """DOCKER_HOST if set, else a private engine for the duration."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    private = PrivateEngine()
    print("starting a private Docker engine (set DOCKER_HOST to use yours) ...")
    private.start()
    try:
        yield private.host
    finally:
        private.stop()


def timed(func: Callable[[], object], runs: int) -> list[float]:
    func()  # warm up (connection, version negotiation)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"{name:<52} median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms")


def make_containers(client: docker.DockerClient, image: str, count: int, tag: str) -> None:
    for i in range(count):
        client.containers.run(
            image,
            ["sleep", "3600"],
            name=f"bench-{tag}-{i:03d}",
            labels={"opsmedic.bench": tag, "opsmedic.managed": "true", "env": "bench"},
            network_mode="none",
            detach=True,
        )


def remove_containers(client: docker.DockerClient, tag: str) -> None:
    for c in client.containers.list(all=True, filters={"label": f"opsmedic.bench={tag}"}):
        with contextlib.suppress(docker.errors.APIError):
            c.remove(force=True)


def run(host: str, count: int, runs: int) -> None:
    client = docker.DockerClient(base_url=host, timeout=60)
    tag = uuid.uuid4().hex[:6]
    try:
        make_containers(client, ensure_busybox_image(client), count, tag)
        total = len(client.api.containers(all=True))
        print(f"{count} sleeping containers created ({total} on the engine); {runs} runs each")
        measure(host, client, tag, runs)
    finally:
        remove_containers(client, tag)
        client.close()


async def timed_async(func: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    await func()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await func()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def measure_engine(host: str, tag: str, runs: int) -> list[ContainerSummary]:
    """list_containers variants, timed inside one event loop (as a server would call it)."""
    default = DockerEngine(base_url=host)
    variants = [
        ("list_containers() default (inspect <= 20 notable rows)", default, None),
        (
            "list_containers() list only (inspect_limit=0)",
            DockerEngine(base_url=host, inspect_limit=0),
            None,
        ),
        (
            "list_containers() inspect every row",
            DockerEngine(base_url=host, inspect_limit=10**6),
            None,
        ),
        (f"list_containers('opsmedic.bench={tag}')", default, f"opsmedic.bench={tag}"),
    ]
    for name, engine, selector in variants:
        report(name, await timed_async(partial(engine.list_containers, selector), runs))
    await measure_stdio(host, runs)
    return await default.list_containers(f"opsmedic.bench={tag}")


async def measure_stdio(host: str, runs: int) -> None:
    """The whole path an MCP client pays: `opsmedic serve` over stdio, tool call round trip."""
    import sys
    import tempfile

    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport

    env = {"DOCKER_HOST": host, "OPSMEDIC_DATA_DIR": tempfile.mkdtemp(prefix="bench-lc-")}
    transport = StdioTransport(sys.executable, ["-m", "mcp_server", "serve"], env=env)
    async with Client(transport) as client:
        await client.call_tool("list_containers", {})  # warm: first inspect fills the cache
        samples = await timed_async(lambda: client.call_tool("list_containers", {}), runs)
    report("MCP tools/call list_containers over stdio", samples)


def measure(host: str, client: docker.DockerClient, tag: str, runs: int) -> None:
    rows = anyio.run(measure_engine, host, tag, runs)
    report(
        "docker-py APIClient.containers(all=True)",
        timed(lambda: client.api.containers(all=True), runs),
    )
    report(
        "docker-py containers.list(all=True) (high level)",
        timed(lambda: client.containers.list(all=True), runs),
    )
    docker_cli = shutil.which("docker")
    if docker_cli:
        cmd = [docker_cli, "-H", host, "ps", "-a"]
        report(
            "docker ps -a (CLI subprocess)",
            timed(lambda: subprocess.run(cmd, check=True, capture_output=True), runs),
        )
    else:
        print("docker CLI not installed: skipped `docker ps -a`")
    text = render_summaries(rows)
    lines = text.splitlines()[1:]
    print(
        f"default text view: {len(text) / max(1, len(rows)):.1f} chars per container "
        f"(longest line {max(map(len, lines), default=0)}), e.g.\n  {lines[0] if lines else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with engine_host() as host:
        run(host, args.containers, args.runs)


if __name__ == "__main__":
    main()
