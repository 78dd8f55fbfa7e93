"""Triage by rules: the embedded default RCA, and the fallback when an LLM fails.

`triage(incident, evidence)` looks at the incident the server's `get_incident` tool returned
and at log lines read with `tail_logs`, and writes a real RCA whose evidence is the lines that
matched, quoted exactly, with their source.

Log lines are untrusted. The rules only *match patterns* in them: a line can make the category
one of the eight fixed categories, never anything else, and what the RCA recommends comes from
this module, not from the line. The RCA is advice; policy decides what is done.

Precedence when several categories match (first wins):
oom > resource > port_conflict > permission > config > dependency > code > unknown.
The order goes from the most specific, most causal signal to the most generic symptom:

- oom: the kernel's verdict (exit 137, OOMKilled) explains every other line that follows it.
- resource (disk full): a full disk makes writes fail, which then shows up as config-looking
  or code-looking errors ("cannot write pid file", tracebacks), so it must win over those.
- port_conflict: EADDRINUSE is unambiguous and says exactly what to fix.
- permission before config: "permission denied" is the precise form of "cannot read config".
- config before dependency: a wrong host name or password in the config also produces
  connection errors; the config line is the cause, the connection error the effect.
- dependency before code: a refused connection usually ends in a traceback; the traceback is
  the symptom, the unreachable dependency the cause.
- code last: tracebacks and panics are what almost every failure looks like in the end.

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

from mcp_server.models import Evidence, Rca, RcaCategory

MAX_EVIDENCE = 5
#: Longer lines are cut in the RCA (the cut is marked); the full line stays in the logs.
MAX_LINE_CHARS = 1000
#: Signals that are not log lines (exit code, incident detail) are quoted from this source.
_FACT_SOURCE = "incident:{id}"


@dataclass(frozen=True)
class Rule:
    """A category, the patterns that show it, and how sure a match makes us."""

    category: RcaCategory
    patterns: tuple[re.Pattern[str], ...]
    confidence: float
    summary: str
    recommendation: str


def _rx(*patterns: str, flags: int = re.IGNORECASE) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, flags) for p in patterns)


_CONFIG_FILE = r"\S*(?:conf|config|settings|\.ya?ml|\.json|\.toml|\.ini|\.env|\.properties|\.cfg)"

#: In precedence order (see the module docstring); the first rule with a match wins.
RULES: tuple[Rule, ...] = (
    Rule(
        "oom",
        _rx(
            r"OOMKilled",
            r"out of memory",
            r"\boom[-_ ]?kill",
            r"Killed process \d+",
            r"OutOfMemoryError",
            r"\bMemoryError\b",
            r"Cannot allocate memory|\bENOMEM\b",
            r"fatal error: runtime: out of memory",
            r"JavaScript heap out of memory",
        ),
        0.85,
        "{target} ran out of memory and was killed.",
        "Raise the memory limit of {target} or find what grows (leak, unbounded cache, "
        "large batch); check read_metrics and the container's memory limit.",
    ),
    Rule(
        "resource",
        _rx(
            r"No space left on device",
            r"\bENOSPC\b",
            r"disk (?:is )?full",
            r"Disk quota exceeded|\bEDQUOT\b",
        ),
        0.9,
        "{target} failed because a disk is full.",
        "Free disk space: call clean_disk(action='plan') to see what may be removed, then "
        "apply that plan; check read_metrics for which filesystem is full.",
    ),
    Rule(
        "port_conflict",
        _rx(
            r"address already in use",
            r"\bEADDRINUSE\b",
            r"port is already allocated",
            r"bind\(\) to \S+ failed",
            r"Only one usage of each socket address",
        ),
        0.9,
        "{target} could not bind its port: another process already uses it.",
        "Find what holds the port (another instance, a leftover process) and stop it, or "
        "configure {target} to use a free port. A restart will fail the same way.",
    ),
    Rule(
        "permission",
        _rx(
            r"permission denied",
            r"\bEACCES\b",
            r"\bEPERM\b",
            r"operation not permitted",
            r"PermissionError",
            r"access is denied",
        ),
        0.8,
        "{target} was denied access to a file, directory or socket it needs.",
        "Fix the ownership or mode of the path named in the evidence, or the user {target} "
        "runs as (volume mounts often change owners). A restart will not help.",
    ),
    Rule(
        "config",
        _rx(
            rf"No such file or directory.*{_CONFIG_FILE}",
            rf"{_CONFIG_FILE}.*No such file or directory",
            rf"FileNotFoundError.*{_CONFIG_FILE}",
            r"invalid config",
            r"configuration (?:error|is invalid|file not found)",
            r"missing required",
            r"required (?:setting|option|environment variable|env var)",
            r"KeyError: '[A-Z][A-Z0-9_]{2,}'",
            r"env(?:ironment)? var(?:iable)?\b.*\b(?:not set|missing|required|undefined)",
            r"\b(?:not set|missing|undefined)\b.*\benv(?:ironment)? var",
            r"yaml\.(?:scanner|parser|constructor)\.|YAMLError|mapping values are not allowed",
            r"unknown (?:option|directive|configuration key)",
            r"password authentication failed|authentication failed|Access denied for user",
        ),
        0.7,
        "{target} stopped because of a configuration error.",
        "Fix the configuration named in the evidence (file, environment variable or "
        "credential) and redeploy; a restart with the same configuration fails again.",
    ),
    Rule(
        "dependency",
        _rx(
            r"connection refused",
            r"\bECONNREFUSED\b",
            r"\bECONNRESET\b|connection reset by peer",
            r"timed out|\bETIMEDOUT\b|deadline exceeded",
            r"Name or service not known",
            r"getaddrinfo",
            r"Temporary failure in name resolution",
            r"could not translate host name",
            r"no such host",
            r"No route to host|\bEHOSTUNREACH\b|Network is unreachable",
            r"could not connect to",
            r"upstream connect error",
        ),
        0.7,
        "{target} could not reach a service it depends on (refused, timed out or not resolved).",
        "Check that the dependency named in the evidence is up and reachable from {target} "
        "(list_containers, probes); a restart with backoff is safe once it is back.",
    ),
    Rule(
        "code",
        _rx(
            r"Traceback \(most recent call last\)",
            r"^\s*panic:|\bgoroutine \d+ \[running\]",
            r"Exception in thread",
            r"segmentation fault|\bSIGSEGV\b|core dumped",
            r"Unhandled(?:Promise)?(?:Rejection| exception)|uncaught exception",
            r"NullPointerException",
        )
        # case-sensitive: "ValueError: ..." is an exception, "ERROR: ..." is a log level
        + _rx(r"\bFATAL\b", r"(?:^|\s)(?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception):\s", flags=0),
        0.6,
        "{target} crashed with an error in its own code.",
        "Read the traceback in the evidence and fix the bug or the input that triggers it; "
        "escalate to the owner of {target} if it repeats.",
    ),
)

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


def triage(incident: dict[str, Any], evidence: list[tuple[str, str]]) -> Rca:
    """Write a rules RCA for `incident` (get_incident's JSON) from `(source, line)` log pairs."""
    target = str(incident.get("target") or "the target")
    count = _int(incident.get("count")) or 1
    facts = _facts(incident)
    pairs = [(s, line) for s, line in evidence if line.strip()]
    for rule in RULES:
        hits = _matches(rule, pairs)
        fact = facts.get(rule.category)
        if not hits and fact is None:
            continue
        confidence = _confidence(rule, hits, fact is not None)
        quoted = _quote(hits) or ([fact] if fact else [])
        return _rca(incident, rule.category, quoted, confidence, count, rule=rule, target=target)
    context = _quote(pairs[-MAX_EVIDENCE:])
    return _rca(incident, "unknown", context, 0.2, count, rule=None, target=target)


def rca_input(rca: Rca) -> dict[str, Any]:
    """The fields of `rca` that the server's record_rca tool takes as its `rca` argument."""
    return rca.model_dump(
        mode="json",
        include={"summary", "category", "evidence", "recommendation", "restart_safe", "confidence"},
    )


# --- internals -----------------------------------------------------------------------------


def _facts(incident: dict[str, Any]) -> dict[str, Evidence]:
    """Signals from the incident itself (not from logs): exit code, OOM flag, probe error."""
    source = _FACT_SOURCE.format(id=incident.get("id", "?"))
    detail = incident.get("detail") or {}
    detail = detail if isinstance(detail, dict) else {}
    title = str(incident.get("title") or "")
    facts: dict[str, Evidence] = {}
    exit_code = _int(detail.get("exit_code"))
    oom_flag = detail.get("oom_killed") is True or detail.get("OOMKilled") is True
    if str(incident.get("symptom")) == "oom" or oom_flag or exit_code == 137:
        why = "OOMKilled" if oom_flag else f"exit code {exit_code}" if exit_code else "oom"
        facts["oom"] = Evidence(source=source, line=_cut(title) or f"{why}")
    error = detail.get("error")
    if isinstance(error, str) and error.strip():
        # a probe's error ("connection refused") is a fact about the target, matched like a line
        for rule in RULES:
            if any(p.search(error) for p in rule.patterns):
                facts.setdefault(rule.category, Evidence(source=source, line=_cut(error)))
                break
    return facts


def _matches(rule: Rule, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(s, line) for s, line in pairs if any(p.search(line) for p in rule.patterns)]


def _confidence(rule: Rule, hits: list[tuple[str, str]], has_fact: bool) -> float:
    """The rule's base confidence, a little more when several lines or a fact agree."""
    if rule.category == "oom" and has_fact:
        base = 0.9  # the kernel said so
    else:
        base = rule.confidence if hits else rule.confidence - 0.1
    bonus = 0.05 * min(2, max(0, len(hits) - 1)) + (0.05 if hits and has_fact else 0.0)
    return round(min(0.95, base + bonus), 2)


def _quote(pairs: list[tuple[str, str]]) -> list[Evidence]:
    return [Evidence(source=s, line=_cut(line)) for s, line in pairs[:MAX_EVIDENCE]]


def _rca(
    incident: dict[str, Any],
    category: RcaCategory,
    evidence: list[Evidence],
    confidence: float,
    count: int,
    *,
    rule: Rule | None,
    target: str,
) -> Rca:
    if rule is None:
        summary = f"{target}: {incident.get('title') or 'failed'}; no known failure pattern."
        recommendation = UNKNOWN_RECOMMENDATION
    else:
        summary = rule.summary.format(target=target)
        recommendation = rule.recommendation.format(target=target)
    safe = _RESTART_SAFE.get(category, count <= 1)
    if category in ("code", "oom") and not safe:
        recommendation += f" It has failed {count} times: do not restart again blindly."
    return Rca(
        incident_id=_int(incident.get("id")) or 0,
        summary=summary[:2000],
        category=category,
        evidence=evidence,
        recommendation=recommendation[:2000],
        restart_safe=safe,
        confidence=confidence,
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
