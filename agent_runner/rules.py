"""Triage by rules: the embedded default RCA, and the fallback when an LLM fails.

`triage(incident, evidence)` looks at the incident the server's `get_incident` tool returned
and at log lines read with `tail_logs`, and writes a real RCA whose evidence is the lines that
decided it, quoted exactly, with their source.

Log lines are untrusted. The rules only *match patterns* in them: a line can make the category
one of the eight fixed categories, never anything else, and what the RCA recommends comes from
this module, not from the line. The RCA is advice; policy decides what is done.

Scoring, not first match. Every category gathers weighted cues (`rca_signals.CUES`, one table
per category) from the whole tail and from the container's facts (OOMKilled / an oom event,
exit code, a probe's error). Per category the strongest line counts fully and each further
line half as much as the one before, so twenty copies of one symptom do not outvote one
cause. Two principles of order add to that:

- the first strong cue is usually the cause and what follows its symptoms (a refused
  connection, then the traceback it raised), so it gets a bonus;
- a cue on the line that ended the process (FATAL, panic, [emerg], aborting) gets a bonus.

Negated cues ("0 errors", "no error", `OOMKilled: false`) do not count, or count against.
Exit 137 without an OOM verdict is a SIGKILL (docker stop, Ctrl-C, a kill), not an OOM: it
is said so and the logs decide. A weak top score or a tie gives `unknown` at low confidence.
The summary names the runner-up category and both scores; confidence grows with the score
and with its lead over the runner-up.

restart_safe per category (would a restart help without making things worse?):

- dependency -> true: transient by nature; a restart (with policy backoff) retries the link.
- unknown -> true: nothing says a restart is harmful; the policy budget stops loops.
- code, oom -> true on the first occurrence only (incident count <= 1): a restart brings
  the service back and a rare crash or a slow leak may not recur; once it repeats, restarting
  again only burns the budget and hides the bug, so a person must look.
- config, permission, resource, port_conflict -> false: the same failure will recur until a
  person changes the config, the permissions, frees disk or the port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent_runner import rules_alert
from agent_runner.rca_signals import (
    CUES,
    EXIT_CODES,
    FATAL_BONUS,
    FATAL_LINE,
    FIRST_CAUSE_BONUS,
    NEGATION,
    OOM_FACT_WEIGHT,
    STRONG,
)
from mcp_server.models import Evidence, Rca, RcaCategory

MAX_EVIDENCE = 5
#: Longer lines are cut in the RCA (the cut is marked); the full line stays in the logs.
MAX_LINE_CHARS = 1000
#: Only this much of a line is matched (cues sit at the start; cost is per character).
MATCH_CHARS = 2000
#: Below this top score, or with a lead smaller than TIE, the answer is `unknown`.
MIN_SCORE = 1.0
TIE = 0.25
#: Signals that are not log lines (exit code, incident detail) are quoted from this source.
_FACT_SOURCE = "incident:{id}"

#: (summary, recommendation) per category; {target} is filled in.
ADVICE: dict[str, tuple[str, str]] = {
    "oom": (
        "{target} ran out of memory.",
        "Raise the memory limit of {target} or find what grows (leak, unbounded cache, "
        "large batch); check read_metrics and the container's memory limit.",
    ),
    "resource": (
        "{target} hit a resource limit (disk space, file descriptors, inotify watches, "
        "processes or threads).",
        "Free or raise the resource named in the evidence: for a full disk call "
        "clean_disk(action='plan'); for nofile/inotify/pids limits raise the ulimit or sysctl "
        "of the host or container. A restart hits the same limit.",
    ),
    "port_conflict": (
        "{target} could not bind its port: another process already uses it.",
        "Find what holds the port (another instance, a leftover process) and stop it, or "
        "configure {target} to use a free port. A restart will fail the same way.",
    ),
    "permission": (
        "{target} was denied access to a file, directory or socket it needs.",
        "Fix the ownership or mode of the path named in the evidence, or the user {target} "
        "runs as (volume mounts often change owners). A restart will not help.",
    ),
    "config": (
        "{target} stopped because of a configuration error.",
        "Fix the configuration named in the evidence (file, environment variable or "
        "credential) and redeploy; a restart with the same configuration fails again.",
    ),
    "dependency": (
        "{target} could not reach a service it depends on (refused, timed out or not resolved).",
        "Check that the dependency named in the evidence is up and reachable from {target} "
        "(list_containers, probes); a restart with backoff is safe once it is back.",
    ),
    "code": (
        "{target} crashed with an error in its own code.",
        "Read the stack trace in the evidence and fix the bug or the input that triggers it; "
        "escalate to the owner of {target} if it repeats.",
    ),
}

UNKNOWN_RECOMMENDATION = (
    "No known failure pattern in the logs. Read more with tail_logs (larger `lines`, "
    "mode='summary') and inspect the target; a restart within the policy budget is acceptable."
)

#: Always safe / never safe to restart; code and oom are safe only on the first occurrence.
_RESTART_SAFE: dict[str, bool] = {
    "dependency": True,
    "unknown": True,
    "config": False,
    "permission": False,
    "resource": False,
    "port_conflict": False,
}
# "2024-05-01T10:00:00.1Z " (the engine's timestamps), "web-1  | ", "│ " (compose and k9s
# prefixes) hide anchors such as "^panic:"
_PREFIX = re.compile(
    r"^\s*(?:\d{4}-\d\d-\d\dT[\d:.,]+(?:Z|[+-]\d\d:?\d\d)?\s+)?"
    r"(?:(?:[\w.@-]+(?: [\w.@-]+)?\s*\||│)\s?)?"
)
_SPACES = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class Hit:
    """One piece of evidence: a line (or a fact) that weighs `weight` for `category`."""

    category: RcaCategory
    weight: float
    index: int  # position in the tail; facts come first (-1)
    source: str
    line: str
    label: str


@dataclass(frozen=True)
class Verdict:
    category: RcaCategory
    confidence: float
    scores: dict[RcaCategory, float]
    runner_up: tuple[RcaCategory, float] | None
    hits: list[Hit]
    note: str = ""


def triage(incident: dict[str, Any], evidence: list[tuple[str, str]]) -> Rca:
    """Write a rules RCA for `incident` (get_incident's JSON) from `(source, line)` log pairs."""
    target = str(incident.get("target") or "the target")
    count = _int(incident.get("count")) or 1
    pairs = [(s, line) for s, line in evidence if line.strip()]
    alert = rules_alert.is_alert(incident)
    scored = rules_alert.without_alert_text(incident) if alert else incident
    verdict = diagnose(scored, pairs)
    if verdict.category == "unknown":
        quoted = _quote(verdict.hits) or [
            Evidence(source=s, line=_cut(line)) for s, line in pairs[-MAX_EVIDENCE:]
        ]
    else:
        quoted = _quote(verdict.hits)
    rca = _rca(scored, verdict, quoted, count, target=target)
    return _alert_rca(incident, rca, bool(pairs)) if alert else rca


def _alert_rca(incident: dict[str, Any], rca: Rca, had_logs: bool) -> Rca:
    """An Alertmanager incident: the alert quoted first (never scored), then the log verdict
    on the target its labels mapped to (see agent_runner.rules_alert)."""
    summary = rules_alert.alert_summary(incident, rca.summary, had_logs)
    advice = rules_alert.alert_recommendation(incident, rca.recommendation, rca.category)
    evidence = rules_alert.alert_evidence(incident) + rca.evidence
    return rca.model_copy(
        update={"summary": summary[:2000], "recommendation": advice[:2000], "evidence": evidence}
    )


def diagnose(incident: dict[str, Any], pairs: list[tuple[str, str]]) -> Verdict:
    """Score every category on the facts and the tail; the winner, its runner-up and hits."""
    hits = _fact_hits(incident) + _log_hits(pairs)
    scores = _scores(hits)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    (best, top), runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    second = runner[1] if runner else 0.0
    note = ""
    if top < MIN_SCORE:
        best, note = "unknown", "no failure cue is strong enough"
    elif best != "unknown" and runner and runner[0] != "unknown" and top - second < TIE:
        note = f"{best} and {runner[0]} are tied"
        best = "unknown"
    confidence = _calibrate(best, top, second, bool(note))
    cited = [h for h in hits if h.category == best and h.weight > 0]
    return Verdict(best, confidence, scores, runner, cited, note)


def rca_input(rca: Rca) -> dict[str, Any]:
    """The fields of `rca` that the server's record_rca tool takes as its `rca` argument."""
    return rca.model_dump(
        mode="json",
        include={"summary", "category", "evidence", "recommendation", "restart_safe", "confidence"},
    )


# --- gathering evidence --------------------------------------------------------------------


def _fact_hits(incident: dict[str, Any]) -> list[Hit]:
    """Signals from the incident itself (not from logs): OOM verdict, exit code, probe error."""
    source = _FACT_SOURCE.format(id=incident.get("id", "?"))
    detail = incident.get("detail") or {}
    detail = detail if isinstance(detail, dict) else {}
    title = _cut(str(incident.get("title") or ""))
    state, health_log = _inspected(incident)
    out: list[Hit] = []
    oom = any(d.get(k) is True for d in (detail, state) for k in ("oom_killed", "OOMKilled"))
    if oom or str(incident.get("symptom")) == "oom":
        line = title or "OOMKilled: the kernel OOM killer ended it"
        if str(incident.get("symptom")) != "oom":
            line = "OOMKilled=true: the kernel OOM killer ended it (container state)"
        out.append(Hit("oom", OOM_FACT_WEIGHT, -1, source, line, "OOMKilled"))
    code = _exit_code(detail) if _exit_code(detail) is not None else _int(state.get("exit_code"))
    if code in EXIT_CODES and not oom:
        category, weight, why = EXIT_CODES[code]
        out.append(Hit(category, weight, -1, source, f"exit code {code}: {why}", why))
    for error in [detail.get("error"), state.get("error"), *health_log]:
        if isinstance(error, str) and error.strip():  # probe/engine errors are matched as lines
            out += _line_hits(-1, source, error)
    return out


def _inspected(incident: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The container's state and health-check outputs, when the runner added an inspect."""
    inspect = incident.get("inspect")
    if not isinstance(inspect, dict):
        return {}, []
    state, health = _dict(inspect.get("state")), _dict(inspect.get("health"))
    runs = health.get("log")
    runs = runs if isinstance(runs, list) else []
    outputs = [str(r.get("output", "")) for r in runs if isinstance(r, dict) and r.get("exit_code")]
    return state, outputs


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _exit_code(detail: dict[str, Any]) -> int | None:
    code = _int(detail.get("exit_code"))
    signal = _int(detail.get("signal"))
    return 128 + signal if code is None and signal else code


def _log_hits(pairs: list[tuple[str, str]]) -> list[Hit]:
    hits: list[Hit] = []
    for index, (source, line) in enumerate(pairs):
        hits += _line_hits(index, source, line)
    return hits


def _line_hits(index: int, source: str, line: str) -> list[Hit]:
    """The strongest cue per category on one line (negated cues skipped), fatal bonus added."""
    text = _SPACES.sub(" ", _PREFIX.sub("", line[:MATCH_CHARS]))
    bonus = FATAL_BONUS if FATAL_LINE.search(text) else 0.0
    out: list[Hit] = []
    for category, cues in CUES.items():
        best: tuple[float, str] | None = None
        for cue in cues:
            m = cue.pattern.search(text)
            if m is None or (
                cue.weight > 0 and NEGATION.search(text[max(0, m.start() - 40) : m.start()])
            ):
                continue
            if cue.weight < 0:
                out.append(Hit(category, cue.weight, index, source, line, cue.label))
            elif best is None or cue.weight > best[0]:
                best = (cue.weight, cue.label)
        if best is not None:
            out.append(Hit(category, best[0] + bonus, index, source, line, best[1]))
    return out


# --- scoring -------------------------------------------------------------------------------


def _scores(hits: list[Hit]) -> dict[RcaCategory, float]:
    """Per category: strongest line + half the next + a quarter the next...; negatives add."""
    strong = [h for h in hits if h.index >= 0 and h.weight >= STRONG]
    first = min((h.index for h in strong), default=None)
    top_first = max((h.weight for h in strong if h.index == first), default=0.0)
    causes = {h.category for h in strong if h.index == first and h.weight == top_first}
    scores: dict[RcaCategory, float] = {"unknown": 0.0}
    for category in {h.category for h in hits}:
        mine = [h for h in hits if h.category == category]
        positive = sorted((h.weight for h in mine if h.weight > 0), reverse=True)
        score = sum(w * 0.5**k for k, w in enumerate(positive))
        score += sum(h.weight for h in mine if h.weight < 0)
        if category in causes:
            score += FIRST_CAUSE_BONUS
        scores[category] = round(score, 2)
    return scores


def _calibrate(category: RcaCategory, top: float, second: float, weak: bool) -> float:
    """Confidence from the winning score and its lead (see the bench's per-band accuracy)."""
    if weak:
        return 0.2 if top < MIN_SCORE else 0.3
    if category == "unknown":
        return round(min(0.6, 0.3 + 0.075 * top), 2)
    strength = min(1.0, top / 6.0)
    lead = (top - max(second, 0.0)) / top
    return round(min(0.95, 0.3 + 0.45 * strength + 0.2 * lead), 2)


def _quote(hits: list[Hit]) -> list[Evidence]:
    """The deciding lines: the heaviest hits, shown in the order they happened."""
    chosen: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (-h.weight, h.index)):
        if all((c.source, c.line) != (hit.source, hit.line) for c in chosen):
            chosen.append(hit)
        if len(chosen) == MAX_EVIDENCE:
            break
    chosen.sort(key=lambda h: h.index)
    return [Evidence(source=h.source, line=_cut(h.line)) for h in chosen]


def _summary(incident: dict[str, Any], verdict: Verdict, target: str) -> str:
    if verdict.category == "unknown" and not verdict.hits:
        head = f"{target}: {incident.get('title') or 'failed'}; no known failure pattern."
    elif verdict.category == "unknown":
        labels = sorted({h.label for h in verdict.hits})
        head = f"{target}: no failure cause found; it looks like {', '.join(labels)}."
    else:
        head = ADVICE[verdict.category][0].format(target=target)
        labels = list(dict.fromkeys(h.label for h in sorted(verdict.hits, key=lambda h: -h.weight)))
        head += f" Decided by: {', '.join(labels[:4])}."
    facts = [h.label for h in _fact_hits(incident) if "not confirmed" in h.label]
    if facts and verdict.category != "oom":
        head += f" Exit 137: {facts[0]}."
    if verdict.note:
        head += f" ({verdict.note}.)"
    top = verdict.scores.get(verdict.category, 0.0)
    runner = verdict.runner_up
    if runner and runner[0] != verdict.category and runner[1] > 0:
        head += f" Runner-up: {runner[0]} (score {runner[1]:g} vs {top:g})."
    else:
        head += f" Runner-up: none (score {top:g})."
    return head


def _rca(
    incident: dict[str, Any], verdict: Verdict, evidence: list[Evidence], count: int, *, target: str
) -> Rca:
    category = verdict.category
    if category == "unknown":
        recommendation = UNKNOWN_RECOMMENDATION
    else:
        recommendation = ADVICE[category][1].format(target=target)
    safe = _RESTART_SAFE.get(category, count <= 1)
    if category in ("code", "oom") and not safe:
        recommendation += f" It has failed {count} times: do not restart again blindly."
    return Rca(
        incident_id=_int(incident.get("id")) or 0,
        summary=_summary(incident, verdict, target)[:2000],
        category=category,
        evidence=evidence,
        recommendation=recommendation[:2000],
        restart_safe=safe,
        confidence=verdict.confidence,
        author="rules",
    )


def _cut(line: str) -> str:
    line = line.rstrip("\r\n")
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [...]"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
