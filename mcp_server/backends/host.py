"""Host metrics from psutil: CPU, load, memory, swap, disks, network rates, top processes.

`HostMetrics` keeps the previous CPU, network and per-process samples between calls, so a
reading never blocks to measure: rates and percentages are deltas since the last call. The
very first call takes two samples a short interval apart (awaited, not slept in a thread).
Every metric is graded ok / warn / crit against `Thresholds`; `HostReport.render()` gives a
compact text for an LLM.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

import anyio
import psutil
from pydantic import BaseModel, ConfigDict, Field

from mcp_server.models import utcnow
from mcp_server.settings import Thresholds

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "crit"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "crit": 2}

#: Filesystems that hold no user data; psutil already drops most "nodev" ones on Linux.
PSEUDO_FS = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "fusectl", "fuse.lxcfs", "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay",
        "proc", "pstore", "ramfs", "securityfs", "squashfs", "sysfs", "tmpfs", "tracefs",
    }
)  # fmt: skip
RENDER_LIMIT = 1500


def grade(value: float, warn: float, crit: float) -> Status:
    """Grade a reading: `crit` at or above crit, `warn` at or above warn, else `ok`."""
    if value >= crit:
        return "crit"
    if value >= warn:
        return "warn"
    return "ok"


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe of the statuses (`ok` when there are none)."""
    return max(statuses, key=_RANK.__getitem__, default="ok")


def cpu_percent_between(before: Any, after: Any) -> float:
    """Busy CPU % between two `psutil.cpu_times()` samples (psutil's own arithmetic)."""
    total = _cpu_total(after) - _cpu_total(before)
    if total <= 0:
        return 0.0
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0)
    )
    return round(min(100.0, max(0.0, (total - idle) / total * 100.0)), 1)


def _cpu_total(times: Any) -> float:
    # On Linux guest time is already counted in user/nice.
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


# --- models ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CpuReport(_Model):
    percent: float
    per_core: list[float]
    status: Status


class LoadReport(_Model):
    """Load averages; graded on the 5-minute value divided by the core count."""

    load1: float
    load5: float
    load15: float
    cores: int
    per_core1: float
    per_core5: float
    per_core15: float
    status: Status


class MemoryReport(_Model):
    total_bytes: int
    used_bytes: int
    available_bytes: int
    percent: float
    status: Status


class SwapReport(_Model):
    total_bytes: int
    used_bytes: int
    percent: float
    status: Status


class DiskReport(_Model):
    mount: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float
    status: Status


class NetReport(_Model):
    interface: str
    sent_bps: float  # bytes per second since the previous reading
    recv_bps: float


class ProcInfo(_Model):
    pid: int
    name: str
    username: str | None = None
    cpu_percent: float  # of one core, like top; may exceed 100 on multi-core
    memory_percent: float
    rss_bytes: int


class HostReport(_Model):
    at: datetime = Field(default_factory=utcnow)
    hostname: str
    uptime_s: float
    interval_s: float  # seconds the rates and CPU % were measured over
    status: Status
    cpu: CpuReport
    load: LoadReport
    memory: MemoryReport
    swap: SwapReport
    disks: list[DiskReport]
    net: list[NetReport]
    top_cpu: list[ProcInfo]
    top_memory: list[ProcInfo]

    def render(self, limit: int = RENDER_LIMIT) -> str:
        """Compact plain-text summary for an LLM, at most `limit` characters."""
        return _cap("\n".join(_render_lines(self)), limit)


# --- sampling ----------------------------------------------------------------------------


class _Sample(NamedTuple):
    mono: float
    cpu: Any
    per_core: list[Any]
    net: dict[str, Any]


class HostMetrics:
    """Reads host metrics; keep one instance so successive readings are deltas.

    `first_interval_s` is also the shortest interval a reading is measured over: a call
    that comes sooner than that after the previous one waits out the rest.
    """

    def __init__(
        self,
        *,
        first_interval_s: float = 0.25,
        top_n: int = 5,
        max_disks: int = 32,
        max_interfaces: int = 32,
    ) -> None:
        self.first_interval_s = first_interval_s
        self.top_n = top_n
        self.max_disks = max_disks
        self.max_interfaces = max_interfaces
        self._prev: _Sample | None = None
        self._procs: dict[int, psutil.Process] = {}
        self._lock = asyncio.Lock()

    async def read_host(self, thresholds: Thresholds) -> HostReport:
        """Take a reading graded against `thresholds`; never blocks the event loop."""
        async with self._lock:
            if self._prev is None:
                self._prev = await anyio.to_thread.run_sync(self._prime)
            # Deltas over a few milliseconds are noise: wait out a minimum interval.
            wait = self.first_interval_s - (time.monotonic() - self._prev.mono)
            if wait > 0:
                await asyncio.sleep(wait)
            return await anyio.to_thread.run_sync(self._read, thresholds)

    def _prime(self) -> _Sample:
        self._sample_procs()  # first cpu_percent() per process only sets its baseline
        return _take_sample()

    def _read(self, th: Thresholds) -> HostReport:
        prev, now = self._prev, _take_sample()
        assert prev is not None
        self._prev = now
        procs = self._sample_procs()
        cpu = _cpu_report(prev, now, th)
        load = _load_report(th)
        memory, swap = _memory_reports(th)
        disks = _disk_reports(th)[: self.max_disks]
        parts = [cpu.status, load.status, memory.status, swap.status, *(d.status for d in disks)]
        return HostReport(
            hostname=socket.gethostname(),
            uptime_s=round(time.time() - psutil.boot_time(), 1),
            interval_s=round(now.mono - prev.mono, 3),
            status=worst(parts),
            cpu=cpu,
            load=load,
            memory=memory,
            swap=swap,
            disks=disks,
            net=_net_reports(prev, now)[: self.max_interfaces],
            top_cpu=[p for p in top_n(procs, "cpu_percent", self.top_n) if p.cpu_percent > 0],
            top_memory=top_n(procs, "memory_percent", self.top_n),
        )

    def _sample_procs(self) -> list[ProcInfo]:
        """One pass over all processes; reuses Process objects so cpu% is a delta."""
        seen: dict[int, psutil.Process] = {}
        out: list[ProcInfo] = []
        for pid in psutil.pids():
            proc = self._procs.get(pid)
            try:
                if proc is None or not proc.is_running():  # is_running() catches pid reuse
                    proc = psutil.Process(pid)
                info = _proc_info(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or not ours to read
                continue
            seen[pid] = proc
            out.append(info)
        self._procs = seen
        return out


def top_n(procs: Sequence[ProcInfo], key: str, n: int) -> list[ProcInfo]:
    """The `n` processes with the largest `key` (cpu_percent or memory_percent)."""
    return heapq.nlargest(n, procs, key=lambda p: (getattr(p, key), -p.pid))


def _proc_info(proc: psutil.Process) -> ProcInfo:
    with proc.oneshot():
        try:
            username: str | None = proc.username()
        except (psutil.AccessDenied, KeyError):
            username = None
        return ProcInfo(
            pid=proc.pid,
            name=proc.name(),
            username=username,
            cpu_percent=round(proc.cpu_percent(None), 1),
            memory_percent=round(proc.memory_percent(), 2),
            rss_bytes=proc.memory_info().rss,
        )


def _take_sample() -> _Sample:
    return _Sample(
        mono=time.monotonic(),
        cpu=psutil.cpu_times(),
        per_core=psutil.cpu_times(percpu=True),
        net=psutil.net_io_counters(pernic=True),
    )


def _cpu_report(prev: _Sample, now: _Sample, th: Thresholds) -> CpuReport:
    percent = cpu_percent_between(prev.cpu, now.cpu)
    cores = [cpu_percent_between(a, b) for a, b in zip(prev.per_core, now.per_core, strict=False)]
    return CpuReport(
        percent=percent, per_core=cores, status=grade(percent, th.cpu_warn, th.cpu_crit)
    )


def _load_report(th: Thresholds) -> LoadReport:
    load1, load5, load15 = psutil.getloadavg()
    cores = psutil.cpu_count() or 1
    per5 = round(load5 / cores, 2)
    return LoadReport(
        load1=round(load1, 2),
        load5=round(load5, 2),
        load15=round(load15, 2),
        cores=cores,
        per_core1=round(load1 / cores, 2),
        per_core5=per5,
        per_core15=round(load15 / cores, 2),
        status=grade(per5, th.load_per_core_warn, th.load_per_core_crit),
    )


def _memory_reports(th: Thresholds) -> tuple[MemoryReport, SwapReport]:
    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    memory = MemoryReport(
        total_bytes=vm.total,
        used_bytes=vm.total - vm.available,
        available_bytes=vm.available,
        percent=round(vm.percent, 1),
        status=grade(vm.percent, th.mem_warn, th.mem_crit),
    )
    swap_pct = round(sw.percent, 1) if sw.total else 0.0
    swap = SwapReport(
        total_bytes=sw.total,
        used_bytes=sw.used,
        percent=swap_pct,
        status=grade(swap_pct, th.swap_warn, th.swap_crit),
    )
    return memory, swap


def _disk_reports(th: Thresholds) -> list[DiskReport]:
    """One entry per real device (its shortest mount point); pseudo filesystems skipped."""
    parts = sorted(psutil.disk_partitions(all=False), key=lambda p: (len(p.mountpoint), p))
    seen: set[str] = set()
    out: list[DiskReport] = []
    for part in parts:
        if part.fstype in PSEUDO_FS or part.device in seen:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:  # unmounted meanwhile, no permission, stale network mount
            continue
        seen.add(part.device)
        out.append(
            DiskReport(
                mount=part.mountpoint,
                device=part.device,
                fstype=part.fstype,
                total_bytes=usage.total,
                used_bytes=usage.used,
                free_bytes=usage.free,
                percent=round(usage.percent, 1),
                status=grade(usage.percent, th.disk_warn, th.disk_crit),
            )
        )
    return out


def _net_reports(prev: _Sample, now: _Sample) -> list[NetReport]:
    """Bytes/s per interface, busiest first; a counter that went backwards counts as 0."""
    dt = max(now.mono - prev.mono, 1e-6)
    out: list[NetReport] = []
    for nic, cur in now.net.items():
        old = prev.net.get(nic)
        if old is None:
            continue
        sent = max(0, cur.bytes_sent - old.bytes_sent) / dt
        recv = max(0, cur.bytes_recv - old.bytes_recv) / dt
        out.append(NetReport(interface=nic, sent_bps=round(sent, 1), recv_bps=round(recv, 1)))
    out.sort(key=lambda n: (-(n.sent_bps + n.recv_bps), n.interface))
    return out


# --- rendering ---------------------------------------------------------------------------


def _render_lines(r: HostReport) -> list[str]:
    cores = r.cpu.per_core
    core_range = f" cores {min(cores):.0f}-{max(cores):.0f}%" if cores else ""
    ld = r.load
    swap = (
        f"swap {r.swap.percent:.0f}% of {_size(r.swap.total_bytes)} {r.swap.status}"
        if r.swap.total_bytes
        else "swap none"
    )
    lines = [
        f"host {_clean(r.hostname, 40)}: {r.status.upper()} (over {r.interval_s:.1f}s)",
        f"cpu {r.cpu.percent:.0f}%{core_range} {r.cpu.status}",
        f"load {ld.load1:.2f}/{ld.load5:.2f}/{ld.load15:.2f} on {ld.cores} cores "
        f"({ld.per_core5:.2f}/core 5m) {ld.status}",
        f"mem {r.memory.percent:.0f}% of {_size(r.memory.total_bytes)} {r.memory.status}; {swap}",
    ]
    disks = sorted(r.disks, key=lambda d: -d.percent)
    shown = [f"{_clean(d.mount, 40)} {d.percent:.0f}% {d.status}" for d in disks[:6]]
    more = f" +{len(disks) - 6} more" if len(disks) > 6 else ""
    lines.append(f"disk {', '.join(shown) or 'none'}{more}")
    nets = [
        f"{_clean(n.interface, 16)} tx {_size(n.sent_bps)}/s rx {_size(n.recv_bps)}/s"
        for n in r.net[:3]
        if n.sent_bps or n.recv_bps
    ]
    lines.append(f"net {', '.join(nets) or 'idle'}")
    busy = ", ".join(f"{_proc(p)} {p.cpu_percent:.0f}%" for p in r.top_cpu)
    lines.append(f"top cpu: {busy or 'all idle'}")
    lines.append("top mem: " + ", ".join(f"{_proc(p)} {_size(p.rss_bytes)}" for p in r.top_memory))
    return lines


def _proc(p: ProcInfo) -> str:
    return f"{_clean(p.name, 24)}({p.pid})"


def _clean(text: str, width: int) -> str:
    """Printable characters only, cut to `width`: names are data, not instructions."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable if len(printable) <= width else printable[: width - 1] + "~"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"  # pragma: no cover


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 14] + "\n[truncated]"
