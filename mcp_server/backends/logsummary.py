"""Summarise log lines for a model: templates with counts, every error and warning kept.

Severity comes from many cues (see `logseverity`): structured levels, failure words in any
case, syslog priorities, single-letter levels, stack traces; negations do not count. Error
and warning lines are grouped by their *strict* template (only numbers, ids, addresses,
paths, times and quoted tokens masked), so distinct failures never merge and every constant
word survives; stack frames under an error fold into it ("+N trace lines"). Info lines are
clustered with drain3 (configured here, in memory, no config file, no persistence).

The summary ALWAYS keeps every error and warning template. When the character budget is
tight it gives up, in order: info templates (least frequent first), examples of errors,
the length of the latest raw lines, then the spelling of variable parts (`<TS>` -> `*`);
never a constant word of an error template. Only past a hard cap (a multiple of the budget)
are the longest templates cut to a common length, so that a few huge lines cannot crowd out
the other failures; then, for a flood of distinct failures, warnings and the costliest
templates are left out first (the note says so). The header counts are over the whole input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from mcp_server.backends.logcap import largest_fitting, leave_out
from mcp_server.backends.logmerge import SLOT, group_variants, render_values
from mcp_server.backends.logseverity import (
    RANK,
    SeverityName,
    info_miner,
    is_frame,
    own_severity,
    strict_template,
)
from mcp_server.errors import InvalidInput

TEMPLATE_CHARS = 300  # an info template longer than this is cut
MINE_CHARS = 5000  # only this much of a line is templated (masking cost is per character)
_RESERVE = 700  # budget kept back for the headline, note and section headers
# Errors are kept past the budget, but not past this: a flood of distinct failures must not
# fill a model's context (the note says what was left out and how to see it).
HARD_CAP_FACTOR = 5
HARD_CAP_MIN = 20_000
CLIP_MIN_CHARS = 2000  # past the hard cap, long templates are cut, to no less than this
# (examples, example chars, latest-line chars, compact placeholders, values per slot),
# from rich to lean: examples go first, then the spelling and the values of variable parts
_DETAIL_LEVELS: tuple[tuple[int, int, int, bool, int | None], ...] = (
    (2, 240, 300, False, None),
    (1, 160, 300, False, None),
    (0, 0, 200, False, None),
    (0, 0, 120, True, None),
    (0, 0, 120, True, 48),
    (0, 0, 120, True, 12),
)
_RANK = RANK
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")  # keeps tab


class TemplateStat(BaseModel):
    """One template: how often it occurred and where (1-based line numbers of the input)."""

    template: str
    severity: SeverityName
    count: int
    first_line: int
    last_line: int
    first: str | None = None  # example lines; None when left out for the budget
    last: str | None = None
    trace_lines: int = 0  # stack frames folded into this error
    values: list[str] = []  # the words seen in the template's one varying slot (<ALT>)
    text_limit: int | None = None  # past the hard cap, a very long template is cut to this

    def template_key(self) -> tuple[str, int]:
        return (self.severity, self.first_line)  # first_line is unique within a severity

    def block(self, compact: bool = False, max_values: int | None = None) -> str:
        where = f"L{self.first_line}" + (f"-L{self.last_line}" if self.count > 1 else "")
        trace = f", +{self.trace_lines} trace lines" if self.trace_lines else ""
        text = self.template
        if self.values:
            text = text.replace(SLOT, render_values(self.values, max_values), 1)
        text = _compact(text) if compact else text
        text = _cut(text, self.text_limit) if self.text_limit else text
        out = [f"[{self.severity} x{self.count} {where}{trace}] {text}"]
        if self.first is not None and self.count > 1 and self.first != self.last:
            out.append(f"  first: {self.first}")
        if self.last is not None:
            out.append(f"  {'last' if self.count > 1 else 'e.g.'}: {self.last}")
        return "\n".join(out)


class LogSummary(BaseModel):
    """Templates that fit the budget (all errors/warnings first), plus the latest lines."""

    lines_total: int
    chars_total: int
    templates_total: int
    templates_by_severity: dict[str, int]
    lines_by_severity: dict[str, int] = {}
    templates: list[TemplateStat]  # errors, warnings (in order of appearance), info by count
    latest: list[str]
    omitted_templates: int = 0
    omitted_lines: int = 0
    budget_chars: int
    compact: bool = False  # variable parts written short to fit the budget
    max_values: int | None = None  # values shown per varying slot (None: all)
    note: str | None = None

    def render(self) -> str:
        """Compact text for a model; the log content in it is untrusted data."""
        by, lines = self.templates_by_severity, self.lines_by_severity
        out = [
            f"log summary: {self.lines_total} lines ({self.chars_total} chars) -> "
            f"{self.templates_total} templates ({by['error']} error, {by['warning']} warning, "
            f"{by['info']} info); lines: {lines.get('error', 0)} error, "
            f"{lines.get('warning', 0)} warning, {lines.get('trace', 0)} trace, "
            f"{lines.get('info', 0)} info"
        ]
        if self.note:
            out.append(f"note: {self.note}")
        for name, title in (("error", "errors"), ("warning", "warnings")):
            shown = [t for t in self.templates if t.severity == name]
            if shown:
                out.append(f"== {title}: all {len(shown)} templates, in order of first seen ==")
                out += [t.block(self.compact, self.max_values) for t in shown]
        info = [t for t in self.templates if t.severity == "info"]
        if info:
            out.append(f"== most frequent info templates: {len(info)} of {by['info']} ==")
            out += [t.block() for t in info]
        if self.latest:
            out.append(f"== latest {len(self.latest)} lines ==")
            out += self.latest
        return "\n".join(out)


def summarize(lines: Sequence[str], budget_chars: int = 10_000, latest: int = 10) -> LogSummary:
    """Cluster `lines` into templates and keep what matters within `budget_chars`.

    Every error and warning template is kept (their examples, then their variable parts,
    shrink first if space is short), then the `latest` raw lines, then the most frequent
    info templates that fit.
    """
    if budget_chars < 1000:
        raise InvalidInput(f"budget_chars must be at least 1000, got {budget_chars}")
    if latest < 0:
        raise InvalidInput(f"latest must be zero or more, got {latest}")
    stats = _cluster(lines)
    severe, info = _ordered(stats)
    recent = [_clean(line) for line in lines[len(lines) - latest :]] if latest else []
    room = budget_chars - _RESERVE
    hard = max(HARD_CAP_FACTOR * budget_chars, HARD_CAP_MIN)
    severe_shown, recent_shown, level, used = _fit_mandatory(severe, recent, room, hard)
    base = LogSummary(
        lines_total=len(lines),
        chars_total=sum(len(line) for line in lines),
        templates_total=len(severe) + len(info),
        templates_by_severity={n: sum(s.severity == n for s in [*severe, *info]) for n in _RANK},
        lines_by_severity=_line_counts(stats),
        templates=severe_shown,
        latest=recent_shown,
        budget_chars=budget_chars,
        compact=_DETAIL_LEVELS[level][3],
        max_values=_DETAIL_LEVELS[level][4],
    )
    kept_keys = {s.template_key() for s in severe_shown}
    cut = [s for s in severe if s.template_key() not in kept_keys]
    kept = _fill(info, room - used)
    while True:  # the reserve covers the headline and note; this only guards the estimate
        shown = {k.template_key() for k in kept}
        omitted = [s for s in info if s.template_key() not in shown]
        summary = base.model_copy(
            update={
                "templates": [*severe_shown, *kept],
                "omitted_templates": len(omitted),
                "omitted_lines": sum(s.count for s in omitted),
                "note": _note(omitted, level, used > room, budget_chars, cut, severe_shown),
            }
        )
        if not kept or len(summary.render()) <= budget_chars:
            return summary
        kept.pop()


def _ordered(stats: list[TemplateStat]) -> tuple[list[TemplateStat], list[TemplateStat]]:
    """Errors then warnings (merged, in order of first seen); info by frequency."""
    severe = sorted(
        _merge([s for s in stats if s.severity != "info"]),
        key=lambda s: (-_RANK[s.severity], s.first_line),
    )
    info = sorted(
        (s for s in stats if s.severity == "info"), key=lambda s: (-s.count, s.first_line)
    )
    return severe, info


def classify(line: str, above: SeverityName = "info") -> SeverityName:
    """Severity of one line; an indented line (stack frame) inherits `above` if higher."""
    own = own_severity(line)
    if line[:1] in (" ", "\t") and _RANK[above] > _RANK[own]:
        return above
    return own


# --- clustering ---------------------------------------------------------------------------


@dataclass
class _Acc:
    severity: SeverityName
    first: str
    first_line: int
    template: str = ""
    last: str = ""
    last_line: int = 0
    count: int = 0
    trace_lines: int = 0


def _cluster(lines: Sequence[str]) -> list[TemplateStat]:
    """Errors/warnings by strict template, frames folded into them; info lines by drain3."""
    miner = info_miner(0.5)
    found: dict[tuple[str, str | int], _Acc] = {}
    parent: _Acc | None = None
    for number, raw in enumerate(lines, start=1):
        line = _clean(raw)
        if not line.strip():
            continue
        severity = own_severity(line)
        if parent is not None and severity == "info" and _continues(line):
            parent.trace_lines += 1
            continue
        key: tuple[str, str | int]
        if severity == "info":
            key = ("info", miner.add_log_message(line[:MINE_CHARS])["cluster_id"])
        else:
            key = (severity, strict_template(line[:MINE_CHARS]))
        acc = found.setdefault(key, _Acc(severity, first=line, first_line=number))
        acc.count += 1
        acc.last, acc.last_line = line, number
        parent = acc if severity != "info" else None
        if severity != "info":
            acc.template = str(key[1])
    for (kind, cid), acc in found.items():
        if kind == "info":
            template = miner.drain.id_to_cluster[int(cid)].get_template()
            acc.template = _cut(template, TEMPLATE_CHARS)
    return [_stat(a) for a in found.values()]


def _continues(line: str) -> bool:
    """A stack frame or an indented line under an error: part of that error's story."""
    return is_frame(line) or line[:1] in (" ", "\t")


def _stat(a: _Acc) -> TemplateStat:
    return TemplateStat(
        template=a.template,
        severity=a.severity,
        count=a.count,
        first_line=a.first_line,
        last_line=a.last_line,
        first=a.first,
        last=a.last,
        trace_lines=a.trace_lines,
    )


def _merge(severe: list[TemplateStat]) -> list[TemplateStat]:
    """Error/warning templates that differ in one word become one, with its values."""
    severe = sorted(severe, key=lambda s: s.first_line)
    out: list[TemplateStat] = []
    for group in group_variants((s.severity, s.template, s.count) for s in severe):
        members = [severe[i] for i in group.members]
        if len(members) == 1:
            out.append(members[0])
            continue
        last = max(members, key=lambda s: s.last_line)
        merged = members[0].model_copy(
            update={
                "template": group.template(),
                "count": sum(s.count for s in members),
                "last_line": last.last_line,
                "last": last.last,
                "trace_lines": sum(s.trace_lines for s in members),
                "values": sorted(group.values, key=lambda v: -group.values[v]),
            }
        )
        out.append(merged)
    return out


def _line_counts(stats: list[TemplateStat]) -> dict[str, int]:
    counts = {name: sum(s.count for s in stats if s.severity == name) for name in _RANK}
    counts["trace"] = sum(s.trace_lines for s in stats)
    return counts


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
    severe: list[TemplateStat], recent: list[str], room: int, hard: int
) -> tuple[list[TemplateStat], list[str], int, int]:
    """Errors/warnings and latest lines at the richest detail level that fits `room`; past
    the last level, templates beyond the `hard` cap are left out (the caller says so)."""
    for level, (examples, chars, recent_chars, compact, values) in enumerate(_DETAIL_LEVELS):
        shown = [_with_examples(s, examples, chars) for s in severe]
        latest = [_cut(line, recent_chars) for line in recent]
        costs = [len(s.block(compact, values)) + 1 for s in shown]
        used = sum(costs) + _cost(latest)
        if used <= room or level == len(_DETAIL_LEVELS) - 1:
            if used > hard:  # a few huge lines must not crowd out the other failures
                shown, costs = _clip_longest(shown, hard - _cost(latest), compact, values)
                out = leave_out([_RANK[s.severity] for s in shown], costs, sum(costs) - hard)
                shown = [s for i, s in enumerate(shown) if i not in out]
                used = sum(c for i, c in enumerate(costs) if i not in out) + _cost(latest)
            return shown, latest, level, used
    raise AssertionError("unreachable")


def _clip_longest(
    shown: list[TemplateStat], room: int, compact: bool, values: int | None
) -> tuple[list[TemplateStat], list[int]]:
    """The longest templates cut to one length, the largest that fits `room` (>= CLIP_MIN)."""

    def clipped(limit: int) -> tuple[list[TemplateStat], list[int]]:
        out = [s.model_copy(update={"text_limit": limit}) for s in shown]
        return out, [len(s.block(compact, values)) + 1 for s in out]

    longest = max((len(s.template) for s in shown), default=0)
    limit = largest_fitting(CLIP_MIN_CHARS, longest, lambda n: sum(clipped(n)[1]), room)
    return clipped(limit)


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


def _note(
    omitted: list[TemplateStat],
    level: int,
    over: bool,
    budget: int,
    cut: list[TemplateStat],
    shown: list[TemplateStat],
) -> str | None:
    parts = []
    if clipped := [s for s in shown if s.text_limit and len(s.template) > s.text_limit]:
        limit = clipped[0].text_limit
        parts.append(f"{len(clipped)} long error/warning templates cut to {limit} chars (hard cap)")
    if cut:
        lines, first = sum(s.count for s in cut), min(s.first_line for s in cut)
        parts.append(
            f"{len(cut)} more error/warning templates ({lines} lines, first at L{first}) "
            "not shown: past the hard cap; use grep or a larger budget"
        )
    if omitted:
        lines = sum(s.count for s in omitted)
        parts.append(f"{len(omitted)} info templates ({lines} lines) omitted to fit {budget} chars")
    if level:
        parts.append("examples were shortened to keep every error and warning template")
    if over and not cut:
        parts.append(f"errors and warnings alone exceed the {budget}-char budget; all kept")
    return "; ".join(parts) or None


_PLACEHOLDER = re.compile(r"<(?:URL|EMAIL|IP|TS|UUID|MAC|HEX|PATH|STR|N|NUM|\*)>")


def _compact(template: str) -> str:
    return _PLACEHOLDER.sub("*", template)


def _clean(line: str) -> str:
    return _CONTROL.sub(" ", line).rstrip()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…[+{len(text) - limit} chars]"
