"""Scheduled monitors: read structured inputs, judge ok / warn / alert, record a Run.

Inputs are read concurrently; `command` inputs (operator config only, argv form) run with a
timeout and bounded concurrency, and a command that hangs is killed at its timeout. The verdict
here is the deterministic one (error lines -> alert, warnings -> warn); an LLM can add its own
opinion in the runner, never replacing the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from mcp_server.backends.logsummary import classify
from mcp_server.core.logsources import read_source
from mcp_server.deps import Deps
from mcp_server.errors import NotFound, OpsMedicError
from mcp_server.models import Run, utcnow
from mcp_server.settings import MonitorInput, MonitorSpec

logger = logging.getLogger(__name__)

VERDICT_RANK = {"ok": 0, "warn": 1, "alert": 2}


@dataclass
class InputResult:
    label: str
    lines: list[str] = field(default_factory=list)
    verdict: str = "ok"
    note: str | None = None


class Monitors:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.specs = {m.name: m for m in deps.settings.monitors}
        self._commands = asyncio.Semaphore(deps.settings.monitor_concurrency)

    def spec(self, name: str) -> MonitorSpec:
        if name not in self.specs:
            known = ", ".join(self.specs) or "none configured"
            raise NotFound(f"no monitor {name!r}; configured: {known}")
        return self.specs[name]

    async def run(self, name: str) -> Run:
        """Execute one monitor now and store its Run (kind=monitor) with verdict and evidence."""
        spec = self.spec(name)
        started = utcnow()
        results = await asyncio.gather(*(self._read(i) for i in spec.inputs))
        evidence = _window(results, spec.window.max_lines, spec.window.max_chars)
        verdict = max((r.verdict for r in results), key=VERDICT_RANK.__getitem__)
        run = Run(
            id=f"monitor-{name}-{started.timestamp():.6f}",
            kind="monitor",
            subject=name,
            status=verdict,
            verdict=verdict,
            started_at=started,
            finished_at=utcnow(),
            log=evidence,
            detail={
                "inputs": [
                    {"label": r.label, "verdict": r.verdict, "note": r.note} for r in results
                ],
                "notify_on": spec.notify_on,
                "prompt": spec.prompt,
            },
        )
        await self.deps.store.put_run(run)
        return run

    async def test(self, name: str) -> list[dict[str, Any]]:
        """Check each input once: can it be read, and how many lines did it give?"""
        spec = self.spec(name)
        results = await asyncio.gather(*(self._read(i) for i in spec.inputs))
        return [
            {
                "label": r.label,
                "ok": r.note is None or not r.note.startswith("failed"),
                "lines": len(r.lines),
                "note": r.note,
            }
            for r in results
        ]

    async def _read(self, item: MonitorInput) -> InputResult:
        label = item.label or _default_label(item)
        try:
            if item.kind == "command":
                lines, note = await self._command(item)
            elif item.kind == "probe":
                lines, note = await self._probe(item)
            elif item.kind == "metrics":
                lines, note = await self._metrics()
            else:
                lines, note = await self._logs(item)
        except OpsMedicError as exc:
            return InputResult(label, [], "warn", f"failed: {exc}")
        return InputResult(label, lines, _verdict(lines, note), note)

    async def _logs(self, item: MonitorInput) -> tuple[list[str], str | None]:
        source = {
            "container_logs": f"container:{item.name}",
            "process_logs": f"process:{item.name}",
            "job_logs": f"job:{item.name}",
            "file": f"file:{item.path}",
        }[item.kind]
        since = utcnow() - timedelta(seconds=item.since_s) if item.since_s else None
        return await read_source(self.deps, source, item.lines, since, item.grep)

    async def _probe(self, item: MonitorInput) -> tuple[list[str], str | None]:
        probes = self.deps.services.probes
        if probes is None or item.name not in probes.names():
            raise NotFound(f"no probe {item.name!r} configured")
        r = await probes.run_now(item.name)
        level = "ERROR" if not r.ok else ("WARNING" if r.status == "warn" else "INFO")
        return [
            f"{level} probe {r.name}: {r.status} {r.error or ''} {r.latency_ms or 0:.0f}ms"
        ], None

    async def _metrics(self) -> tuple[list[str], str | None]:
        report = await self.deps.services.host.read_host(self.deps.settings.thresholds)
        level = {"ok": "INFO", "warn": "WARNING", "crit": "ERROR"}[report.status]
        return [f"{level} host status {report.status}", *report.render().splitlines()], None

    async def _command(self, item: MonitorInput) -> tuple[list[str], str | None]:
        async with self._commands:
            proc = await asyncio.create_subprocess_exec(
                *item.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), item.timeout_s)
            except TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                line = f"ERROR command timed out after {item.timeout_s:g}s and was killed"
                return [line], f"timed out after {item.timeout_s:g}s"
        lines = out.decode("utf-8", "replace").splitlines()[-item.lines :]
        if proc.returncode:
            lines.append(f"ERROR command exited with code {proc.returncode}")
        return lines, None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _verdict(lines: list[str], note: str | None) -> str:
    levels = {classify(line) for line in lines}
    if "error" in levels:
        return "alert"
    return "warn" if "warning" in levels else "ok"


def _default_label(item: MonitorInput) -> str:
    return f"{item.kind}:{item.name or item.path or ' '.join(item.argv)[:40]}"


def _window(results: list[InputResult], max_lines: int, max_chars: int) -> list[str]:
    """Evidence lines, labelled by input, newest kept, within the monitor's window."""
    lines = [f"[{r.label}] {line}" for r in results for line in r.lines]
    lines = lines[-max_lines:]
    total, kept = 0, list[str]()
    for line in reversed(lines):
        total += len(line) + 1
        if total > max_chars:
            kept.append(f"…[window: {len(lines) - len(kept)} earlier lines not shown]")
            break
        kept.append(line)
    return list(reversed(kept))
