"""Summarise log lines for a model: templates with counts, every error and warning kept.

Lines are clustered into templates with drain3 (configured here, in memory, no config file,
no persistence). Numbers, hex, UUIDs, IPs and timestamps are masked first so ids do not
explode the template count. Each line gets a severity from its level tokens (ERROR, FATAL,
panic, Traceback, ...Exception, WARN...); indented continuation lines (stack frames) take
the severity of the line above. Errors, warnings and info lines are mined separately, so
an error never hides inside an info template.

The summary ALWAYS keeps every error and warning template and the latest raw lines, then
adds the most frequent info templates while the character budget allows, and says how
many templates and lines it left out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig
from pydantic import BaseModel

from mcp_server.errors import InvalidInput

# drain3 logs its start-up and state at INFO; never let that reach a stdio transport.
logging.getLogger("drain3").setLevel(logging.WARNING)

SeverityName = Literal["error", "warning", "info"]

TEMPLATE_CHARS = 300  # a template longer than this is cut
LATEST_CHARS = 300  # each of the latest raw lines is cut here
MINE_CHARS = 2000  # only this much of a line is clustered (masking cost is per character)
_RESERVE = 700  # budget kept back for the headline, note and section headers
_DETAIL_LEVELS = ((2, 240, 300), (1, 240, 300), (1, 120, 160), (0, 0, 120))  # examples, chars

_ERROR = re.compile(
    r"\b(?:ERROR|ERR|FATAL|CRITICAL|CRIT|EMERG|ALERT|SEVERE|PANIC)\b|\bpanic:"
    r"|Traceback \(most recent call last\)|(?<=\w)Error\b|Exception\b"
    r"|^[EF]\d{4} "
    r"|(?i:\blevel\"?\s*[=:]\s*\"?(?:error|err|fatal|crit|critical|panic|emerg|alert)\b"
    r"|\[(?:error|fatal|crit|critical|emerg|alert)\]|\b(?:error|fatal):)"
)
_WARNING = re.compile(
    r"\b(?:WARN|WARNING)\b|\b[A-Z]\w*Warning\b|^W\d{4} "
    r"|(?i:\blevel\"?\s*[=:]\s*\"?warn(?:ing)?\b|\[warn(?:ing)?\]|\bwarning:)"
)
# Cheap substring checks that let most (info) lines skip the regexes above.
_ERROR_HINTS = (
    "err",
    "fatal",
    "crit",
    "emerg",
    "alert",
    "severe",
    "panic",
    "traceback",
    "exception",
)
_GLOG = re.compile(r"[EFW]\d{4} ")
_RANK = {"info": 0, "warning": 1, "error": 2}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")  # keeps tab

_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_MASKS = (  # order matters: the wide patterns first, plain numbers last
    (r"\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2}\b)?", "TS"),
    (rf"\b{_MONTH} +\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}\b", "TS"),
    (r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "TS"),
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "UUID"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b", "IP"),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b", "HEX"),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?", "NUM"),
)


class TemplateStat(BaseModel):
    """One template: how often it occurred and where (1-based line numbers of the input)."""

    template: str
    severity: SeverityName
    count: int
    first_line: int
    last_line: int
    first: str | None = None  # example lines; None when left out for the budget
    last: str | None = None

    def template_key(self) -> tuple[str, int]:
        return (self.severity, self.first_line)  # first_line is unique within a severity

    def block(self) -> str:
        out = [f"[{self.severity} x{self.count}] {self.template}"]
        if self.first is not None and self.count > 1 and self.first != self.last:
            out.append(f"  first (L{self.first_line}): {self.first}")
        if self.last is not None:
            out.append(
                f"  {'last' if self.count > 1 else 'example'} (L{self.last_line}): {self.last}"
            )
        return "\n".join(out)


class LogSummary(BaseModel):
    """Templates that fit the budget (all errors/warnings first), plus the latest lines."""

    lines_total: int
    chars_total: int
    templates_total: int
    templates_by_severity: dict[str, int]
    templates: list[TemplateStat]  # errors, warnings (in order of appearance), info by count
    latest: list[str]
    omitted_templates: int = 0
    omitted_lines: int = 0
    budget_chars: int
    note: str | None = None

    def render(self) -> str:
        """Compact text for a model; the log content in it is untrusted data."""
        by = self.templates_by_severity
        out = [
            f"log summary: {self.lines_total} lines ({self.chars_total} chars) -> "
            f"{self.templates_total} templates ({by['error']} error, {by['warning']} warning, "
            f"{by['info']} info)"
        ]
        if self.note:
            out.append(f"note: {self.note}")
        severe = [t for t in self.templates if t.severity != "info"]
        info = [t for t in self.templates if t.severity == "info"]
        if severe:
            out.append(f"== errors and warnings: all {len(severe)} templates ==")
            out += [t.block() for t in severe]
        if info:
            out.append(f"== most frequent info templates: {len(info)} of {by['info']} ==")
            out += [t.block() for t in info]
        if self.latest:
            out.append(f"== latest {len(self.latest)} lines ==")
            out += self.latest
        return "\n".join(out)


def summarize(lines: Sequence[str], budget_chars: int = 6000, latest: int = 10) -> LogSummary:
    """Cluster `lines` into templates and keep what matters within `budget_chars`.

    Every error and warning template is kept (their examples shrink first if space is
    short), then the `latest` raw lines, then the most frequent info templates that fit.
    """
    if budget_chars < 1000:
        raise InvalidInput(f"budget_chars must be at least 1000, got {budget_chars}")
    if latest < 0:
        raise InvalidInput(f"latest must be zero or more, got {latest}")
    stats = _cluster(lines)
    severe = sorted(
        (s for s in stats if s.severity != "info"), key=lambda s: (-_RANK[s.severity], s.first_line)
    )
    info = sorted(
        (s for s in stats if s.severity == "info"), key=lambda s: (-s.count, s.first_line)
    )
    recent = [_clean(line) for line in lines[len(lines) - latest :]] if latest else []
    room = budget_chars - _RESERVE
    severe_shown, recent_shown, level, used = _fit_mandatory(severe, recent, room)
    kept = _fill(info, room - used)
    while True:  # the reserve covers the headline and note; this only guards the estimate
        shown = {k.template_key() for k in kept}
        omitted = [s for s in info if s.template_key() not in shown]
        summary = LogSummary(
            lines_total=len(lines),
            chars_total=sum(len(line) for line in lines),
            templates_total=len(stats),
            templates_by_severity={n: sum(s.severity == n for s in stats) for n in _RANK},
            templates=[*severe_shown, *kept],
            latest=recent_shown,
            omitted_templates=len(omitted),
            omitted_lines=sum(s.count for s in omitted),
            budget_chars=budget_chars,
            note=_note(omitted, level, used > room, budget_chars),
        )
        if not kept or len(summary.render()) <= budget_chars:
            return summary
        kept.pop()


def classify(line: str, above: SeverityName = "info") -> SeverityName:
    """Severity of one line; an indented line (stack frame) inherits `above` if higher."""
    own = _own_severity(line)
    if line[:1] in (" ", "\t") and _RANK[above] > _RANK[own]:
        return above
    return own


def _own_severity(line: str) -> SeverityName:
    low = line.lower()
    glog = _GLOG.match(line) is not None
    if (glog or any(h in low for h in _ERROR_HINTS)) and _ERROR.search(line):
        return "error"
    if (glog or "warn" in low) and _WARNING.search(line):
        return "warning"
    return "info"


# --- clustering ---------------------------------------------------------------------------


@dataclass
class _Acc:
    severity: SeverityName
    cluster_id: int
    first: str
    first_line: int
    last: str = ""
    last_line: int = 0
    count: int = 0


def _miner(sim_th: float) -> TemplateMiner:
    config = TemplateMinerConfig()  # built in code: no drain3.ini lookup, no persistence
    config.drain_sim_th = sim_th
    config.drain_depth = 5
    config.profiling_enabled = False
    config.masking_instructions = [MaskingInstruction(p, name) for p, name in _MASKS]
    return TemplateMiner(persistence_handler=None, config=config)


def _cluster(lines: Sequence[str]) -> list[TemplateStat]:
    # errors and warnings use a stricter similarity so distinct failures stay distinct
    miners = {"error": _miner(0.6), "warning": _miner(0.6), "info": _miner(0.5)}
    found: dict[tuple[str, int], _Acc] = {}
    above: SeverityName = "info"
    for number, raw in enumerate(lines, start=1):
        line = _clean(raw)
        if not line.strip():
            continue
        above = severity = classify(line, above)
        cluster_id = miners[severity].add_log_message(line[:MINE_CHARS])["cluster_id"]
        acc = found.setdefault(
            (severity, cluster_id), _Acc(severity, cluster_id, first=line, first_line=number)
        )
        acc.count += 1
        acc.last, acc.last_line = line, number
    return [
        TemplateStat(
            template=_cut(
                miners[a.severity].drain.id_to_cluster[a.cluster_id].get_template(), TEMPLATE_CHARS
            ),
            severity=a.severity,
            count=a.count,
            first_line=a.first_line,
            last_line=a.last_line,
            first=a.first,
            last=a.last,
        )
        for a in found.values()
    ]


# --- fitting the budget -------------------------------------------------------------------


def _with_examples(stat: TemplateStat, examples: int, chars: int) -> TemplateStat:
    return stat.model_copy(
        update={
            "first": _cut(stat.first or "", chars) if examples >= 2 else None,
            "last": _cut(stat.last or "", chars) if examples >= 1 else None,
        }
    )


def _cost(blocks: Sequence[str]) -> int:
    return sum(len(b) + 1 for b in blocks)


def _fit_mandatory(
    severe: list[TemplateStat], recent: list[str], room: int
) -> tuple[list[TemplateStat], list[str], int, int]:
    """Errors/warnings and latest lines at the richest detail level that fits `room`."""
    for level, (examples, chars, recent_chars) in enumerate(_DETAIL_LEVELS):
        shown = [_with_examples(s, examples, chars) for s in severe]
        latest = [_cut(line, recent_chars) for line in recent]
        used = _cost([s.block() for s in shown]) + _cost(latest)
        if used <= room or level == len(_DETAIL_LEVELS) - 1:
            return shown, latest, level, used
    raise AssertionError("unreachable")


def _fill(info: list[TemplateStat], room: int) -> list[TemplateStat]:
    """Most frequent info templates first, each with one example, while they fit."""
    kept: list[TemplateStat] = []
    for stat in info:
        shown = _with_examples(stat, 1, 160)
        cost = len(shown.block()) + 1
        if cost <= room:
            kept.append(shown)
            room -= cost
    return kept


def _note(omitted: list[TemplateStat], level: int, over: bool, budget: int) -> str | None:
    parts = []
    if omitted:
        lines = sum(s.count for s in omitted)
        parts.append(f"{len(omitted)} info templates ({lines} lines) omitted to fit {budget} chars")
    if level:
        parts.append("examples were shortened to keep every error and warning template")
    if over:
        parts.append(f"errors and warnings alone exceed the {budget}-char budget; all kept")
    return "; ".join(parts) or None


def _clean(line: str) -> str:
    return _CONTROL.sub(" ", line).rstrip()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…[+{len(text) - limit} chars]"
