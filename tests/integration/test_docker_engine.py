"""DockerEngine against a real, private Docker engine (fixtures in tests/conftest.py)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest

from mcp_server.backends.docker.engine import DockerEngine
from mcp_server.backends.docker.events import DockerEvent, EventHistory, classify
from mcp_server.errors import Conflict, InvalidInput, NotFound, Unavailable
from tests.services import DockerEngine as PrivateEngine
from tests.services import ensure_busybox_image

FAIL_FAST = {
    "test": ["CMD-SHELL", "echo probe-failed; false"],
    "interval": 200_000_000,
    "retries": 1,
}
PASS_FAST = {"test": ["CMD-SHELL", "true"], "interval": 200_000_000, "retries": 1}


@pytest.fixture
def engine(docker_host: str) -> DockerEngine:
    return DockerEngine(base_url=docker_host)


@pytest.fixture
def tag() -> str:
    """A label value unique to one test, so listings ignore other tests' containers."""
    return uuid.uuid4().hex[:8]


async def poll(check: Callable[[], Any], within: float = 15.0) -> Any:
    """Await `check()` (sync or async) until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {within}s"
        await anyio.sleep(0.05)


async def collect_until(
    events: AsyncGenerator[DockerEvent, None],
    stop: Callable[[DockerEvent], bool],
    within: float = 15.0,
) -> list[DockerEvent]:
    got: list[DockerEvent] = []
    with anyio.fail_after(within):
        async for event in events:
            got.append(event)
            if stop(event):
                return got
    return got


# --- listing ---------------------------------------------------------------------------


async def test_list_filters_by_selector_and_status(
    engine: DockerEngine, docker_env: Any, tag: str
) -> None:
    a = docker_env.run("a", labels={"t": tag, "env": "prod", "opsmedic.managed": "true", "x": "1"})
    b = docker_env.run("b", labels={"t": tag, "env": "dev"})
    c = docker_env.run("c", "exit 3", labels={"t": tag, "env": "prod"})
    docker_env.wait_status(c, "exited")

    prod = await engine.list_containers(f"t={tag},env=prod")
    assert [r.name for r in prod] == sorted([a.name, c.name])
    row_a = next(r for r in prod if r.name == a.name)
    assert row_a.labels == {"t": tag, "env": "prod", "opsmedic.managed": "true"}  # no "x"
    assert row_a.status == "running" and row_a.restart_count == 0 and row_a.started_at
    assert len(row_a.id) == 12 and row_a.image == "opsmedic-test/busybox:latest"

    running = await engine.list_containers(f"t={tag},env=prod", status="running")
    assert [r.name for r in running] == [a.name]
    exited = await engine.list_containers(f"t={tag}", status="exited")
    assert [(r.name, r.exit_code) for r in exited] == [(c.name, 3)]
    assert exited[0].finished_at is not None
    assert [r.name for r in await engine.list_containers(f"t={tag},env!=prod")] == [b.name]
    assert len(await engine.list_containers(f"t={tag},opsmedic.managed")) == 1
    everything = await engine.list_containers(f"t={tag}", all_labels=True)
    assert next(r for r in everything if r.name == a.name).labels["x"] == "1"
    assert all(len(r.line()) <= 100 for r in everything)

    # past inspect_limit rows, only notable ones (here: all recent, so the first by name)
    capped = DockerEngine(base_url=engine.host, inspect_limit=1)
    counts = [r.restart_count for r in await capped.list_containers(f"t={tag}")]
    assert len(counts) == 3 and counts.count(None) == 2

    with pytest.raises(InvalidInput, match="running"):
        await engine.list_containers(status="sleeping")
    with pytest.raises(InvalidInput, match="key=value"):
        await engine.list_containers("=prod")


async def test_list_reports_health(engine: DockerEngine, docker_env: Any, tag: str) -> None:
    sick = docker_env.run("sick", labels={"t": tag}, healthcheck=FAIL_FAST)
    well = docker_env.run("well", labels={"t": tag}, healthcheck=PASS_FAST)

    async def settled() -> bool:
        rows = {r.name: r.health for r in await engine.list_containers(f"t={tag}")}
        return rows == {sick.name: "unhealthy", well.name: "healthy"}

    await poll(settled)
    only = await engine.list_containers(f"t={tag}", status="unhealthy")
    assert [r.name for r in only] == [sick.name]
    assert "(unhealthy)" in only[0].line()


# --- inspect ---------------------------------------------------------------------------


async def test_inspect_exited_container(
    engine: DockerEngine, docker_env: Any, tmp_path: Path
) -> None:
    c = docker_env.run(
        "crash",
        "echo bye; exit 3",
        mem_limit="64m",
        nano_cpus=500_000_000,
        pids_limit=50,
        volumes={str(tmp_path): {"bind": "/cfg", "mode": "ro"}},
    )
    docker_env.wait_status(c, "exited")
    d = await engine.inspect_container(c.name)
    s = d.state
    assert (s.status, s.running, s.exit_code, s.oom_killed) == ("exited", False, 3, False)
    assert s.started_at and s.finished_at  # (the engine may stamp finish a hair before start)
    assert d.limits.memory_bytes == 64 * 2**20 and d.limits.nano_cpus == 500_000_000
    assert d.limits.pids == 50 and d.restart_policy == "no" and d.health is None
    assert d.mounts == [f"bind {tmp_path} -> /cfg ro"] and d.networks == ["none"]
    assert "exit=3" in d.render()
    assert [line.split(" ", 1)[1] for line in await engine.logs(c.name, 10)] == ["bye"]
    assert (await engine.container_state(c.name)).exit_code == 3


async def test_inspect_failing_healthcheck(engine: DockerEngine, docker_env: Any) -> None:
    c = docker_env.run("sick", healthcheck=FAIL_FAST)

    async def unhealthy() -> Any:
        d = await engine.inspect_container(c.name)
        return d if d.health and d.health.status == "unhealthy" else None

    d = await poll(unhealthy)
    assert d.health.failing_streak >= 1 and 1 <= len(d.health.log) <= 3
    assert d.health.log[-1].exit_code == 1 and d.health.log[-1].output == "probe-failed"
    assert "health unhealthy" in d.render()


# --- OOM and events --------------------------------------------------------------------


async def test_oom_kill_is_seen_in_state_and_events(engine: DockerEngine, docker_env: Any) -> None:
    since = time.time()
    c = docker_env.run(
        # the pause matters: an OOM in the first few ms after start beats the engine's OOM
        # notifier (Docker 20.10, cgroup v1): exit 137 but no oom event and OOMKilled false
        "hog",
        "sleep 0.5; dd if=/dev/zero bs=32M count=1 of=/dev/null",
        mem_limit="8m",
        memswap_limit="8m",
    )
    async with aclosing(engine.events(since=since)) as events:
        got = await collect_until(events, lambda e: e.name == c.name and e.action == "die")
    mine = [e.action for e in got if e.name == c.name]
    state = await engine.container_state(c.name)
    # this kernel (cgroup v1 memory controller) OOM-kills: OOMKilled, exit 137, an oom event
    assert state.oom_killed and state.exit_code == 137
    assert "oom" in mine and mine.index("oom") < mine.index("die")
    history = EventHistory()
    symptoms = []
    for event in (e for e in got if e.name == c.name):
        symptoms.append(classify(event, history))
        history.record(event)
    assert [s.kind for s in symptoms if s] == ["oom"]  # the die after the oom is not a twin


async def test_events_see_a_crash_within_a_second(engine: DockerEngine, docker_env: Any) -> None:
    async with aclosing(engine.events(since=time.time())) as events:
        # the reader thread starts on first iteration: wait until the stream is live
        probe = docker_env.run("probe")
        await collect_until(events, lambda e: e.name == probe.name and e.action == "start")
        crash = await anyio.to_thread.run_sync(lambda: docker_env.run("crash", "exit 5"))
        got = await collect_until(events, lambda e: e.name == crash.name and e.action == "die")
        received = time.time()
    die = got[-1]
    assert die.exit_code == 5
    # detection latency contract: the die event reaches us well within a second
    assert received - die.time < 1.0
    symptom = classify(die, EventHistory())
    assert symptom is not None and symptom.kind == "died" and "code 5" in symptom.detail


async def test_restart_loop_and_unhealthy_from_events(
    engine: DockerEngine, docker_env: Any
) -> None:
    since = time.time()
    looper = docker_env.run("loop", "exit 1", restart_policy={"Name": "always"})
    sick = docker_env.run("sick", healthcheck=FAIL_FAST)
    history = EventHistory()
    seen: dict[str, str] = {}

    def done(event: DockerEvent) -> bool:
        if event.name not in (looper.name, sick.name):
            return False  # other tests share the engine
        symptom = classify(event, history)
        history.record(event)
        if symptom:
            seen.setdefault(symptom.kind, event.name)
        return "restart_loop" in seen and "unhealthy" in seen

    async with aclosing(engine.events(since=since)) as events:
        await collect_until(events, done)
    assert seen["restart_loop"] == looper.name and seen["unhealthy"] == sick.name
    assert seen["died"] == looper.name


async def test_event_follower_thread_ends_when_consumer_cancels(docker_host: str) -> None:
    engine = DockerEngine(base_url=docker_host)
    before = set(threading.enumerate())

    async def consume() -> None:
        async for _ in engine.events():
            pass

    def reader() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "docker-events" and t not in before]

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        mine = await poll(reader, 5)
        tg.cancel_scope.cancel()
    await poll(lambda: not any(t.is_alive() for t in mine), 5)


async def test_events_resume_after_the_engine_restarts() -> None:
    """A private engine (not the session one) is stopped and started on the same socket."""
    private = PrivateEngine()
    await anyio.to_thread.run_sync(private.start)
    try:
        client = private.client()
        image = ensure_busybox_image(client)

        def crash(name: str, code: int) -> None:
            client.containers.run(
                image, ["sh", "-c", f"exit {code}"], name=name, network_mode="none", detach=True
            )

        engine = DockerEngine(base_url=private.host)
        async with aclosing(engine.events(since=time.time())) as events:
            crash("before", 1)
            await collect_until(events, lambda e: e.name == "before" and e.action == "die")
            await anyio.to_thread.run_sync(lambda: private.stop(keep_dir=True))
            await anyio.to_thread.run_sync(private.start)
            client = private.client()
            crash("after", 2)
            got = await collect_until(events, lambda e: e.action == "die", within=30)
        assert (got[-1].name, got[-1].exit_code) == ("after", 2)
        assert ("before", "die") not in [(e.name, e.action) for e in got]  # nothing replayed
    finally:
        await anyio.to_thread.run_sync(private.stop)


# --- restart, start, wait --------------------------------------------------------------


async def test_restart_then_wait_running(engine: DockerEngine, docker_env: Any) -> None:
    c = docker_env.run("web", healthcheck=PASS_FAST, labels={"opsmedic.managed": "true"})
    before = await engine.container_state(c.name)
    await engine.restart(c.name, timeout_s=1)
    ok, detail = await engine.wait_running(c.name, timeout_s=15, need_healthy=True)
    after = await engine.container_state(c.name)
    assert ok, detail
    assert "healthy" in detail and after.health == "healthy"
    assert after.started_at and before.started_at and after.started_at > before.started_at
    assert after.pid != before.pid


async def test_wait_running_reports_failures(engine: DockerEngine, docker_env: Any) -> None:
    crash = docker_env.run("crash", "sleep 0.3; exit 4")
    ok, detail = await engine.wait_running(crash.name, timeout_s=15, stable_s=5)
    assert not ok and detail == "exited with code 4"

    slow = docker_env.run(
        "slow", healthcheck={"test": ["CMD-SHELL", "true"], "interval": 60 * 10**9}
    )
    ok, detail = await engine.wait_running(slow.name, timeout_s=0.5, need_healthy=True)
    assert not ok and detail.startswith("not ready after 0.5s") and "starting" in detail

    sick = docker_env.run("sick", healthcheck=FAIL_FAST)
    ok, detail = await engine.wait_running(sick.name, timeout_s=15, need_healthy=True)
    assert not ok and detail == "running but unhealthy"


async def test_start_a_stopped_container(engine: DockerEngine, docker_env: Any) -> None:
    c = docker_env.run("web")
    c.stop(timeout=0)
    docker_env.wait_status(c, "exited")
    await engine.start(c.name)
    ok, detail = await engine.wait_running(c.name, timeout_s=10)
    assert ok, detail


# --- logs and stats --------------------------------------------------------------------


async def test_logs_merge_streams_with_timestamps(engine: DockerEngine, docker_env: Any) -> None:
    c = docker_env.run("talk", r"echo one; echo two >&2; printf 'bad \377 byte\n'; echo four")
    docker_env.wait_status(c, "exited")
    lines = await engine.logs(c.name, lines=10)
    texts = [line.split(" ", 1)[1] for line in lines]
    # stdout keeps its order; the engine may place the stderr line anywhere beside it
    assert [t for t in texts if t != "two"] == ["one", "bad \ufffd byte", "four"]
    assert texts.count("two") == 1
    assert all(len(line.split(" ", 1)[0]) == len("2026-01-01T00:00:00.000Z") for line in lines)
    assert await engine.logs(c.name, lines=1) == lines[-1:]
    assert await engine.logs(c.name, 10, since=datetime.now(UTC) + timedelta(hours=1)) == []


async def test_stats_of_running_containers(engine: DockerEngine, docker_env: Any) -> None:
    c = docker_env.run("busy", "while true; do :; done", mem_limit="32m")
    docker_env.wait_status(c, "running")
    rows = {r["name"]: r for r in await engine.stats()}
    row = rows[c.name]
    assert row["mem_limit_bytes"] == 32 * 2**20 and 0 < row["mem_pct"] < 100
    assert row["cpu_pct"] is not None and row["cpu_pct"] > 0  # a busy loop uses CPU


# --- errors ----------------------------------------------------------------------------


async def test_unknown_container_names_the_listing_tool(engine: DockerEngine) -> None:
    await engine.ping()
    with pytest.raises(NotFound, match=r"no container 'nope-.*'; call list_containers"):
        await engine.inspect_container(f"nope-{uuid.uuid4().hex[:6]}")
    with pytest.raises(NotFound):
        await engine.restart("nope-restart")
    with pytest.raises(NotFound):
        await engine.logs("nope-logs", 5)


async def test_unreachable_engine_is_unavailable(tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/no-such.sock"
    lazy = DockerEngine(base_url=missing)
    with pytest.raises(Unavailable):
        await lazy.ping()
    with pytest.raises(
        Unavailable, match=f"no Docker engine reachable at {missing}: start dockerd"
    ):
        await lazy.list_containers()
    injected = DockerEngine(docker.APIClient(base_url=missing, version="1.41", timeout=2))
    with pytest.raises(Unavailable, match="other tools keep working"):
        await injected.inspect_container("web")
    assert injected.host == missing


# --- disk clean-up helpers -------------------------------------------------------------


def _tiny_image_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().bytes
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def test_disk_helpers_list_and_remove(
    engine: DockerEngine, docker_env: Any, tag: str
) -> None:
    out = docker_env.client.api.import_image_from_data(_tiny_image_tar())
    image_id = json.loads(out.strip().splitlines()[-1])["status"].removeprefix("sha256:")[:12]
    assert image_id in {i.id for i in await engine.dangling_images()}
    await engine.remove_image(image_id)
    assert image_id not in {i.id for i in await engine.dangling_images()}

    managed = docker_env.run("kept", "exit 0", labels={"opsmedic.managed": "true", "t": tag})
    loose = docker_env.run("loose", "exit 0", labels={"t": tag})
    running = docker_env.run("up", labels={"t": tag})
    for c in (managed, loose):
        docker_env.wait_status(c, "exited")
    stopped = {
        i.name: i for i in await engine.stopped_unmanaged_containers("opsmedic.managed=true")
    }
    assert loose.name in stopped and managed.name not in stopped and running.name not in stopped
    await engine.remove_container(stopped[loose.name].id)
    with pytest.raises(NotFound):
        await engine.inspect_container(loose.name)
    with pytest.raises(Conflict, match="running"):
        await engine.remove_container(running.id)
    assert await engine.build_cache_bytes() >= 0
    assert await engine.prune_build_cache() >= 0
