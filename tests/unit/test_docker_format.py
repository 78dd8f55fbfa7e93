"""Pure parsing, formatting and classification of Docker payloads (plain dicts, no engine).

Covers docker_format, docker_inspect and the pure parts of docker_events / docker_engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from mcp_server.backends.docker.events import (
    DockerEvent,
    EventHistory,
    _since_param,
    classify,
    follow_events,
    parse_event,
)
from mcp_server.backends.docker.format import (
    cpu_percent,
    engine_filters,
    memory_usage,
    parse_docker_time,
    parse_exit_code,
    parse_health,
    render_summaries,
    stats_row,
    summary_from_row,
)
from mcp_server.backends.docker.inspection import (
    ContainerState,
    detail_from_inspect,
    running_verdict,
    state_from_inspect,
)
from mcp_server.selectors import parse_selector

# --- selectors -------------------------------------------------------------------------


def test_listing_and_policy_share_one_selector_grammar() -> None:
    """`==` and `!key` mean the same in list_containers as in the policy scope."""
    sel = parse_selector("env==prod,tier,team!=ops,!legacy")
    assert sel.matches({"env": "prod", "tier": "web"})
    assert not sel.matches({"env": "prod", "tier": "web", "legacy": "1"})
    assert not sel.matches({"env": "prod", "tier": "web", "team": "ops"})
    assert not sel.matches(None)


def test_engine_filters_leave_negations_to_the_client() -> None:
    sel = parse_selector("env=prod,tier,team!=ops,!legacy")
    assert engine_filters(sel, "exited") == {"label": ["env=prod", "tier"], "status": ["exited"]}
    assert engine_filters(parse_selector(None), "unhealthy") == {"health": ["unhealthy"]}
    assert engine_filters(parse_selector(""), None) == {}


# --- list rows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "health", "code"),
    [
        ("Up 3 minutes (healthy)", "healthy", None),
        ("Up 3 seconds (unhealthy)", "unhealthy", None),
        ("Up Less than a second (health: starting)", "starting", None),
        ("Up 2 hours", "none", None),
        ("Exited (3) 2 minutes ago", "none", 3),
        ("Exited (137) About an hour ago", "none", 137),
        ("Restarting (1) 1 second ago", "none", 1),
        ("Created", "none", None),
    ],
)
def test_status_text(text: str, health: str, code: int | None) -> None:
    assert parse_health(text) == health
    assert parse_exit_code(text) == code


def test_docker_times() -> None:
    assert parse_docker_time("2026-11-21T05:26:26.332270467Z") == datetime(
        2026, 11, 21, 5, 26, 26, 332270, tzinfo=UTC
    )
    assert parse_docker_time("2026-11-21T05:26:26Z") == datetime(
        2026, 11, 21, 5, 26, 26, tzinfo=UTC
    )
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("") is None and parse_docker_time("garbage") is None


def _row(**over: Any) -> dict[str, Any]:
    row = {
        "Id": "86536013d13babb86e64c1ef7a39a4a3dd06df6e08e7414e456f04c25169922e",
        "Names": ["/web"],
        "Image": "registry.example.com/team/web-frontend:2026.11.21-abcdef",
        "State": "exited",
        "Status": "Exited (3) 3 seconds ago",
        "Labels": {"opsmedic.managed": "true", "env": "prod", "com.example.noise": "x" * 200},
    }
    row.update(over)
    return row


def test_summary_from_list_row() -> None:
    s = summary_from_row(_row(), label_keys={"env"})
    assert (s.name, s.id, s.status, s.exit_code, s.health) == (
        "web",
        "86536013d13b",
        "exited",
        3,
        "none",
    )
    assert s.labels == {"opsmedic.managed": "true", "env": "prod"}
    assert s.restart_count is None and s.started_at is None
    assert summary_from_row(_row(), label_keys=None).labels["com.example.noise"] == "x" * 200
    assert summary_from_row(_row(Image="sha256:" + "a" * 64), set()).image == "a" * 12


def test_line_is_short_and_says_what_matters() -> None:
    s = summary_from_row(_row(), label_keys=None).model_copy(update={"restart_count": 4})
    line = s.line()
    assert len(line) <= 100
    assert line.startswith("web | Exited (3) 3 seconds ago | restarts=4 | registry.example")
    short = summary_from_row(_row(Labels={}, Image="busybox"), set()).line()
    assert short == "web | Exited (3) 3 seconds ago | busybox"


def test_notable_rows() -> None:
    def notable(state: str, text: str) -> bool:
        return summary_from_row(_row(State=state, Status=text), set()).notable()

    assert notable("exited", "Exited (0) 1 hour ago")
    assert notable("running", "Up 2 days (unhealthy)")
    assert notable("running", "Up 12 seconds")
    assert notable("running", "Up 59 minutes")
    assert not notable("running", "Up About an hour")
    assert not notable("running", "Up 3 days (healthy)")


def test_render_counts_then_lines() -> None:
    rows = [
        summary_from_row(_row(), set()),
        summary_from_row(
            _row(Names=["/db"], State="running", Status="Up 1 hour (unhealthy)"), set()
        ),
    ]
    text = render_summaries(rows)
    assert text.splitlines()[0] == "2 containers (1 exited, 1 running, 1 unhealthy)"
    assert len(text.splitlines()) == 3
    assert render_summaries([]) == "no containers match"


# --- inspect ---------------------------------------------------------------------------


def _inspect_doc() -> dict[str, Any]:
    log = [
        {"End": f"2026-11-21T05:26:2{i}.1Z", "ExitCode": 1, "Output": f"fail {i}\n" + "y" * 500}
        for i in range(5)
    ]
    return {
        "Id": "bed46c6f9884c7b8daba78beae433305184a8d51dedeaf71d0dc34e56025c779",
        "Name": "/hc",
        "Image": "sha256:c5d782048b1ef1260109946c9c2012a9562229670df9b1f135921b75d0f54765",
        "Path": "sleep",
        "Args": ["100"],
        "RestartCount": 2,
        "State": {
            "Status": "running",
            "Running": True,
            "OOMKilled": False,
            "Pid": 9227,
            "ExitCode": 0,
            "StartedAt": "2026-11-21T05:26:26.332270467Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
            "Health": {"Status": "unhealthy", "FailingStreak": 5, "Log": log},
        },
        "Config": {"Image": "opsmedic-test/busybox", "Labels": {"env": "prod"}},
        "HostConfig": {
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5},
            "Memory": 67108864,
            "MemorySwap": -1,
            "NanoCpus": 500000000,
            "PidsLimit": None,
        },
        "Mounts": [
            {"Type": "bind", "Source": "/srv/cfg", "Destination": "/cfg", "RW": False},
            {"Type": "volume", "Name": "data", "Source": "", "Destination": "/data", "RW": True},
        ],
        "NetworkSettings": {"Networks": {"none": {}, "backend": {}}},
    }


def test_detail_from_inspect_is_bounded() -> None:
    d = detail_from_inspect(_inspect_doc())
    assert (d.name, d.id, d.image, d.image_id) == (
        "hc",
        "bed46c6f9884",
        "opsmedic-test/busybox",
        "c5d782048b1e",
    )
    assert d.command == "sleep 100" and d.restart_policy == "on-failure:5"
    assert d.state.running and d.state.restart_count == 2 and d.state.finished_at is None
    assert d.health is not None and d.health.status == "unhealthy" and d.health.failing_streak == 5
    assert [r.output[:6] for r in d.health.log] == ["fail 2", "fail 3", "fail 4"]
    assert all(len(r.output) <= 200 for r in d.health.log)
    assert d.limits.memory_bytes == 64 * 2**20 and d.limits.memory_swap_bytes is None
    assert d.limits.nano_cpus == 500_000_000 and d.limits.pids is None
    assert d.mounts == ["bind /srv/cfg -> /cfg ro", "volume data -> /data rw"]
    assert d.networks == ["backend", "none"]
    text = d.render()
    assert "health unhealthy failing_streak=5" in text and "restarts=2" in text
    assert len(text) < 2000


def test_state_of_oom_killed_container() -> None:
    doc = _inspect_doc()
    doc["State"] = {"Status": "exited", "OOMKilled": True, "ExitCode": 137, "Error": ""}
    s = state_from_inspect(doc)
    assert (s.status, s.running, s.oom_killed, s.exit_code, s.health) == (
        "exited",
        False,
        True,
        137,
        "none",
    )
    assert "OOMKilled" in detail_from_inspect(doc).render()


# --- stats -----------------------------------------------------------------------------


def _sample(
    total: int, pre_total: int, system: int, pre_system: int, cpus: int = 2
) -> dict[str, Any]:
    return {
        "cpu_stats": {
            "cpu_usage": {"total_usage": total},
            "system_cpu_usage": system,
            "online_cpus": cpus,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
        "memory_stats": {"usage": 300, "limit": 1000, "stats": {"total_inactive_file": 100}},
        "pids_stats": {"current": 3},
    }


def test_cpu_percent_from_deltas() -> None:
    # 0.5 s of CPU while the system (2 cpus) advanced 2 s: one quarter of the box = 50 % of a core
    assert (
        cpu_percent(_sample(1_500_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000)) == 50.0
    )
    assert cpu_percent(_sample(10, 10, 20, 10)) == 0.0
    assert cpu_percent(_sample(10, 5, 10, 10)) is None  # no system time elapsed
    one_shot = {
        "cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 9},
        "precpu_stats": {},
    }
    assert cpu_percent(one_shot) is None
    percpu = _sample(300, 100, 1100, 100, cpus=0)
    percpu["cpu_stats"]["cpu_usage"]["percpu_usage"] = [1, 2, 3, 4]
    assert cpu_percent(percpu) == 80.0


def test_memory_excludes_page_cache() -> None:
    assert memory_usage(_sample(1, 0, 1, 0)) == (200, 1000)
    v2 = {"memory_stats": {"usage": 500, "limit": 1000, "stats": {"inactive_file": 50}}}
    assert memory_usage(v2) == (450, 1000)
    assert memory_usage({"memory_stats": {}}) is None
    row = stats_row("web", "a" * 64, _sample(1, 0, 2, 0))
    assert row == {
        "name": "web",
        "id": "a" * 12,
        "cpu_pct": 100.0,
        "mem_usage_bytes": 200,
        "mem_limit_bytes": 1000,
        "mem_pct": 20.0,
        "pids": 3,
    }


# --- events ----------------------------------------------------------------------------


def _raw(action: str, t: float, cid: str = "c" * 64, **attrs: str) -> dict[str, Any]:
    nano = int(t * 1e9)
    return {
        "Type": "container",
        "Action": action,
        "id": cid,
        "Actor": {"ID": cid, "Attributes": {"name": "web", "image": "busybox", **attrs}},
        "time": int(t),
        "timeNano": nano,
    }


def test_parse_event() -> None:
    e = parse_event(_raw("die", 100.25, exitCode="3", env="prod"))
    assert e is not None
    assert (e.action, e.name, e.id, e.exit_code, e.time) == ("die", "web", "c" * 12, 3, 100.25)
    assert e.labels == {"env": "prod"}
    h = parse_event(_raw("health_status: unhealthy", 1.0))
    assert h is not None and (h.action, h.health) == ("health_status", "unhealthy")
    k = parse_event(_raw("kill", 1.0, signal="15"))
    assert k is not None and k.signal == 15
    assert parse_event(_raw("exec_die", 1.0)) is None
    assert parse_event({**_raw("die", 1.0), "Type": "network"}) is None


def _event(action: str, t: float, **kw: Any) -> DockerEvent:
    return DockerEvent(time=t, action=action, name="web", id="c" * 12, **kw)


def test_classify_failures() -> None:
    h = EventHistory()
    died = classify(_event("die", 10, exit_code=3), h)
    assert died is not None and died.kind == "died" and "code 3" in died.detail
    oom = classify(_event("oom", 10), h)
    assert oom is not None and oom.kind == "oom"
    sick = classify(_event("health_status", 10, health="unhealthy"), h)
    assert sick is not None and sick.kind == "unhealthy"
    assert classify(_event("health_status", 10, health="healthy"), h) is None
    assert classify(_event("restart", 10), h) is None


def test_die_after_kill_or_oom_is_not_a_new_symptom() -> None:
    h = EventHistory()
    h.record(_event("kill", 100, signal=15))
    assert classify(_event("die", 101, exit_code=143), h) is None  # someone stopped it
    assert classify(_event("die", 200, exit_code=1), h) is not None  # long after: a crash
    h.record(_event("oom", 300))
    assert classify(_event("die", 300.01, exit_code=137), h) is None  # reported as oom


def test_crash_soon_after_a_restart_is_a_crash() -> None:
    h = EventHistory()
    h.record(_event("kill", 100, signal=15))  # OpsMedic restarts it: kill, die, start
    assert classify(_event("die", 100.5, exit_code=143), h) is None
    h.record(_event("start", 101))
    symptom = classify(_event("die", 102, exit_code=3), h)  # and it crashes again at once
    assert symptom is not None and symptom.kind == "died"


def test_restart_loop_on_third_start_within_a_minute() -> None:
    h = EventHistory()
    results = []
    for t in (0.0, 20.0, 45.0, 200.0, 201.0, 290.0):
        ev = _event("start", t)
        results.append(classify(ev, h))
        h.record(ev)
    kinds = [r.kind if r else None for r in results]
    assert kinds == [None, None, "restart_loop", None, None, None]
    assert h.starts == {"c" * 12: [290.0]}  # older starts forgotten
    h.record(_event("kill", 291.0))
    h.record(DockerEvent(time=400.0, action="start", name="db", id="d" * 12))
    assert h.starts == {"d" * 12: [400.0]} and h.kills == {}


def test_since_param_keeps_nanoseconds() -> None:
    assert _since_param(1_795_238_786_000_000_007) == "1795238786.000000007"


# --- follower (threads + reconnect), with an in-memory stream -------------------------


class _FakeStream:
    """A closable blocking iterator like docker-py's CancellableStream."""

    def __init__(self, items: list[dict[str, Any]], block: bool) -> None:
        self.items, self.block = items, block
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.items
        if self.block:
            self.closed.wait(10)

    def close(self) -> None:
        self.closed.set()


async def test_follower_reconnects_dedupes_and_stops() -> None:
    a, b, c = _raw("start", 1.0), _raw("die", 2.0, exitCode="1"), _raw("start", 3.0)
    opened: list[str | None] = []
    streams: list[_FakeStream] = []

    def open_stream(since: str | None) -> _FakeStream:
        opened.append(since)
        if len(opened) == 2:
            raise ConnectionError("engine restarting")
        # the second connection replays b (same timeNano) and brings c, then blocks
        stream = _FakeStream([a, b] if len(opened) == 1 else [b, c], block=len(opened) > 2)
        streams.append(stream)
        return stream

    got: list[DockerEvent] = []
    with anyio.fail_after(10):
        async with aclosing(follow_events(open_stream, backoff=(0.01, 0.02))) as events:
            async for event in events:
                got.append(event)
                if len(got) == 3:
                    break
    assert [(e.action, e.time) for e in got] == [("start", 1.0), ("die", 2.0), ("start", 3.0)]
    assert opened[0] is None and opened[2] == "2.000000000"
    deadline = time.monotonic() + 5
    while any(t.name == "docker-events" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "reader thread did not stop"
        await anyio.sleep(0.01)
    assert streams[-1].closed.is_set()


# --- wait_running verdicts -------------------------------------------------------------


def test_wait_running_verdicts() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    started = now - timedelta(seconds=2)

    def verdict(
        need_healthy: bool = False, stable_s: float = 0.0, **kw: Any
    ) -> tuple[bool, bool, str]:
        base: dict[str, Any] = {"status": "running", "running": True, "started_at": started}
        return running_verdict(ContainerState(**{**base, **kw}), need_healthy, stable_s, now)

    assert verdict()[:2] == (True, False)
    assert verdict(stable_s=5)[:2] == (False, False)
    assert verdict(need_healthy=True, health="starting")[:2] == (False, False)
    assert verdict(need_healthy=True, health="unhealthy")[:2] == (False, True)
    assert verdict(need_healthy=True, health="healthy")[:2] == (True, False)
    assert verdict(health="unhealthy")[:2] == (True, False)  # health not asked for
    assert verdict(status="restarting", restarting=True)[:2] == (False, False)
    ok, done, detail = verdict(status="exited", running=False, exit_code=137, oom_killed=True)
    assert (ok, done) == (False, True) and detail == "exited with code 137 (OOMKilled)"


def test_a_never_started_container_is_down_since_its_creation() -> None:
    """`docker run` creates then starts: a reconcile pass in between must see a fresh target
    (down since a moment ago), not one that "should be running but is created"."""
    from mcp_server.drivers.container import ContainerDriver
    from mcp_server.settings import PolicySettings

    doc = _inspect_doc()
    doc["Created"] = "2026-12-02T09:00:00.123456789Z"
    zero = "0001-01-01T00:00:00Z"
    doc["State"] = {"Status": "created", "Running": False, "StartedAt": zero, "FinishedAt": zero}

    class Engine:
        async def inspect_container(self, name: str) -> Any:
            return detail_from_inspect(doc)

    state = anyio.run(ContainerDriver(Engine(), PolicySettings()).state, "hc")
    assert (state.exists, state.running) == (True, False)
    assert state.down_since == datetime(2026, 12, 2, 9, 0, 0, 123456, UTC)
