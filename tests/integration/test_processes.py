"""ProcessSupervisor against real subprocesses (python -c scripts), real files and signals."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from mcp_server.backends.processes import ProcessExit, ProcessSupervisor
from mcp_server.errors import ConfigError, NotFound, Unavailable
from mcp_server.settings import ProcessSpec

PY = sys.executable

PRINTS = "import sys; print('hello out'); sys.stderr.write('hello err\\n')"
CRASH = "import sys; print('about to fail'); sys.exit(3)"
SLEEPS = "import time; print('ready', flush=True); time.sleep(60)"
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)
# The parent prints its child's pid, then sleeps (SPAWNS) or exits at once (ORPHANS).
_CHILD = (
    "import subprocess, sys, time; "
    "c = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); "
    "print('child', c.pid, flush=True); "
)
SPAWNS = _CHILD + "time.sleep(60)"
ORPHANS = _CHILD + "time.sleep(0.2)"


def spec(name: str, code: str, **kw: object) -> ProcessSpec:
    return ProcessSpec.model_validate({"name": name, "argv": [PY, "-c", code], **kw})


async def until(pred: Callable[[], object], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def log_text(sup: ProcessSupervisor, name: str) -> str:
    path = sup.log_path(name)
    return path.read_text() if path.exists() else ""


def has_line(sup: ProcessSupervisor, name: str, line: str) -> bool:
    """True once the process printed `line` (the start marker also quotes the argv)."""
    return line in log_text(sup, name).splitlines()


async def child_pid(sup: ProcessSupervisor, name: str) -> int:
    await until(lambda: any(x.startswith("child ") for x in log_text(sup, name).splitlines()))
    line = next(x for x in log_text(sup, name).splitlines() if x.startswith("child "))
    return int(line.split()[1])


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., ProcessSupervisor]]:
    made: list[ProcessSupervisor] = []

    def _make(*specs: ProcessSpec) -> ProcessSupervisor:
        sup = ProcessSupervisor(list(specs), tmp_path / "logs", group_grace_s=0.5)
        made.append(sup)
        return sup

    yield _make
    for sup in made:
        await sup.close()


async def next_exit(sub: AsyncIterator[ProcessExit], within_s: float = 10.0) -> ProcessExit:
    return await asyncio.wait_for(anext(sub), within_s)


async def test_output_goes_to_the_log_and_exit_is_published(make) -> None:
    sup = make(spec("hello", PRINTS))
    async with sup.subscribe() as sub:
        statuses = await sup.start_all()
        assert statuses[0].running and statuses[0].pid
        event = await next_exit(sub)
    assert (event.name, event.exit_code, event.signal, event.requested) == ("hello", 0, None, False)
    text = log_text(sup, "hello")
    assert "hello out" in text and "hello err" in text
    assert f"started pid {event.pid}" in text and "exited pid" in text
    status = sup.status("hello")
    assert not status.running and status.exit_code == 0 and status.exited_at is not None


async def test_crash_reports_exit_code_to_subscribers_and_callbacks(make) -> None:
    sup = make(spec("crashy", CRASH))
    seen: list[ProcessExit] = []
    unregister = sup.on_exit(seen.append)
    async with sup.subscribe() as sub:
        await sup.start("crashy")
        event = await next_exit(sub)
    assert event.exit_code == 3 and not event.requested and event.runtime_s >= 0
    await until(lambda: seen)
    assert seen[0] == event
    assert sup.list()[0].exit_code == 3
    unregister()
    unregister()  # twice is harmless


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(make) -> None:
    sup = make(spec("stubborn", IGNORES_TERM))
    await sup.start("stubborn")
    await until(lambda: has_line(sup, "stubborn", "ready"))
    async with sup.subscribe() as sub:
        status = await sup.stop("stubborn", timeout_s=0.3)
        event = await next_exit(sub)
    assert not status.running and status.signal == "SIGKILL" and status.exit_code is None
    assert event.requested and event.signal == "SIGKILL"


async def test_sigterm_is_enough_for_a_well_behaved_process(make) -> None:
    sup = make(spec("polite", SLEEPS))
    await sup.start("polite")
    await until(lambda: has_line(sup, "polite", "ready"))
    status = await sup.stop("polite")
    assert status.signal == "SIGTERM"
    again = await sup.stop("polite")  # stopping a stopped process is a no-op
    assert again == status


async def test_children_die_with_the_group_on_stop(make) -> None:
    sup = make(spec("parent", SPAWNS))
    started = await sup.start("parent")
    child = await child_pid(sup, "parent")
    assert not gone(child)
    await sup.stop("parent", timeout_s=0.5)
    await until(lambda: gone(child))
    assert started.pid is not None and gone(started.pid)


async def test_leftovers_of_a_crashed_leader_are_cleaned_up(make) -> None:
    sup = make(spec("orphaner", ORPHANS))
    await sup.start("orphaner")
    child = await child_pid(sup, "orphaner")
    await until(lambda: not sup.status("orphaner").running)
    await until(lambda: gone(child))


async def test_restart_gives_a_new_pid_and_counts(make) -> None:
    sup = make(spec("worker", SLEEPS))
    first = await sup.start("worker")
    assert first.restarts == 0
    assert (await sup.start("worker")).pid == first.pid  # already running: left alone
    async with sup.subscribe() as sub:
        second = await sup.restart("worker", timeout_s=2)
        event = await next_exit(sub)
    assert second.running and second.pid != first.pid and second.restarts == 1
    assert event.pid == first.pid and event.requested
    third = await sup.restart("worker", timeout_s=2)
    assert third.restarts == 2 and third.pid not in (first.pid, second.pid)


async def test_close_leaves_no_orphans(make) -> None:
    sup = make(spec("a", SPAWNS), spec("b", IGNORES_TERM), spec("c", SLEEPS, autostart=False))
    statuses = await sup.start_all()
    assert [s.running for s in statuses] == [True, True, False]
    child = await child_pid(sup, "a")
    await until(lambda: has_line(sup, "b", "ready"))
    pids = [s.pid for s in statuses if s.pid] + [child]
    await sup.close(timeout_s=0.5)
    await until(lambda: all(gone(p) for p in pids))
    assert not any(s.running for s in sup.list())
    with pytest.raises(Unavailable, match="shutting down"):
        await sup.start("c")


async def test_inspect_shows_usage_and_env_names_only(make, tmp_path: Path) -> None:
    sup = make(spec("insp", SLEEPS, cwd=str(tmp_path), env={"API_KEY": "s3cret-value"}))
    await sup.start("insp")
    detail = sup.inspect("insp")
    assert detail.running and detail.cwd == str(tmp_path) and detail.env_keys == ["API_KEY"]
    assert "s3cret-value" not in detail.model_dump_json()
    assert detail.rss_bytes and detail.rss_bytes > 0 and detail.pgid == detail.pid
    assert detail.cpu_percent is not None and detail.cpu_percent >= 0
    assert detail.log_path == str(sup.log_path("insp"))


async def test_env_is_passed_but_opsmedic_settings_are_not(make, monkeypatch) -> None:
    monkeypatch.setenv("OPSMEDIC_SMTP__PASSWORD", "hunter22")
    code = "import os; e = os.environ; print('A=' + e.get('A', '-'), "
    code += "'OPS=' + e.get('OPSMEDIC_SMTP__PASSWORD', 'absent'))"
    sup = make(spec("envy", code, env={"A": "1"}))
    async with sup.subscribe() as sub:
        await sup.start("envy")
        await next_exit(sub)
    text = log_text(sup, "envy")
    assert "A=1" in text and "OPS=absent" in text and "hunter22" not in text


async def test_unknown_name_and_bad_command(make) -> None:
    sup = make(spec("one", SLEEPS), ProcessSpec(name="broken", argv=["/nonexistent/bin"]))
    assert sup.names() == ["one", "broken"]
    with pytest.raises(NotFound, match="configured: one, broken"):
        await sup.start("nope")
    with pytest.raises(NotFound):
        sup.inspect("nope")
    with pytest.raises(Unavailable, match="cannot start process 'broken'"):
        await sup.start("broken")
    status = sup.status("broken")
    assert not status.running and status.last_error and "nonexistent" in status.last_error
    assert "start failed" in log_text(sup, "broken")


async def test_big_log_is_rotated_at_the_next_start(tmp_path: Path) -> None:
    sup = ProcessSupervisor([spec("chatty", "print('x' * 5000)")], tmp_path, max_log_bytes=1000)
    try:
        async with sup.subscribe() as sub:
            await sup.start("chatty")
            await next_exit(sub)
            await sup.restart("chatty")
            await next_exit(sub)
    finally:
        await sup.close()
    rotated = tmp_path / "chatty.log.1"
    assert rotated.exists() and "x" * 5000 in rotated.read_text()
    assert sup.status("chatty").restarts == 1


def test_duplicate_names_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice"):
        ProcessSupervisor([spec("same", SLEEPS), spec("same", CRASH)], tmp_path)
