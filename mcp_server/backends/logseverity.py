"""Severity of a log line from many cues; strict templates of error lines; drain3 for info.

No per-system regexes: the cues are what failures look like in any log.

- structured levels: JSON/logfmt `level`/`severity` fields, syslog `<N>` priorities,
  bracketed or bare level tokens (ERROR, E, SEVERE, crit...), glog/klog `E0102` prefixes,
  Android `E/Tag` and `E Tag:` single-letter levels;
- words, in any case: fail/failed/failure, error, exception, fatal, panic, denied, refused,
  timeout/timed out, unable, cannot, corrupt, abort, killed, critical, severe, emerg...;
- stack traces: `Traceback`, `Caused by:`, `at ...` frames (frames fold into their error);
- negations excluded: "0 errors", "no error", "errors=0", "without failure".

An explicit info/debug level with failure words is a warning: the words are kept, the level
is respected. The strict template masks only what varies (numbers, ids, addresses, paths,
times, quoted single tokens): every constant word of an error line stays in its template.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

# drain3 logs its start-up and state at INFO; never let that reach a stdio transport.
logging.getLogger("drain3").setLevel(logging.WARNING)

SeverityName = Literal["error", "warning", "info"]
RANK = {"info": 0, "warning": 1, "error": 2}

_ERR_LEVEL = r"(?:error|err|fatal|crit|critical|alert|emerg|emergency|panic|severe)"
_WARN_LEVEL = r"(?:warn|warning)"
_INFO_LEVEL = r"(?:info|information|notice|debug|trace|verbose)"
_FIELD = (
    r"[\"']?(?:level|severity|log\.level|levelname|lvl|loglevel|priority)[\"']?\s*[=:]\s*[\"']?"
)

# An explicit level near the start of the line: a field (level=error, "severity":"ERROR"),
# a bracketed token ([error], <crit>), or a bare upper-case or single-letter level. The
# leftmost one wins: a level comes before the message that may quote another.
_TAGGED = re.compile(
    rf"(?:{_FIELD}|[\[<(|])(?:(?P<error>{_ERR_LEVEL})|(?P<warning>{_WARN_LEVEL})"
    rf"|(?P<info>{_INFO_LEVEL}))(?:\b|[\]>)|:])"
)  # searched in the lower-cased head of the line
_BARE = re.compile(
    r"(?<![\w/.-])(?:(?P<error>ERROR|ERR|FATAL|CRIT|CRITICAL|ALERT|EMERG|PANIC|SEVERE|Error|Fatal"
    r"|Critical)|(?P<warning>WARN|WARNING|Warning)|(?P<info>INFO|DEBUG|NOTICE|TRACE|Information"
    r"|Informational))\b"
    r"|(?:^|\s)(?:(?P<e1>[EF])|(?P<w1>W)|(?P<i1>[IDV]))(?:/[\w.$-]+\s*\(|\s+[\w.$/-]+\s*:|\d{4}\s)"
)
_TAG_HINT = re.compile(r"[\[<(|]|lev|sev|lvl|prio")
_GROUPS: dict[str, SeverityName] = {
    "error": "error",
    "warning": "warning",
    "info": "info",
    "e1": "error",
    "w1": "warning",
    "i1": "info",
}
_SYSLOG_PRI = re.compile(r"^\s*<(\d{1,3})>")
# Failure words, in any case and inside words too ("CommitFailed", "NoSuchFileException").
_WORDS = (
    "fail", "error", "exception", "fatal", "panic", "denied", "refus", "timeout", "timed out",
    "unable", "cannot", "can't", "corrupt", "abort", "killed", "critical", "severe", "emerg",
    "segfault", "oops", "unreachable", "traceback", "bug:", "parity", "violation", "invalid",
    "illegal", "unhandled",
)  # fmt: skip
_WARN_WORDS = ("warn", "deprecat")
_NEGATED = re.compile(
    # a count of zero is a token of its own: "0 failures", not the "@0" of "host:80@0 failed"
    r"(?:\b(?:no|zero|without|never|none)|(?<![\w@:./\-])0)\s+(?:\w+\s+)?"
    r"(?:errors?|failures?|failed|warnings?"
    r"|exceptions?|timeouts?|panics?)\w*"
    r"|\b(?:errors?|failures?|failed|fails|warnings?|exceptions?|timeouts?)\w*\s*[=:]\s*\"?0\b"
    # empty fields of structured logs: "error": null, err="", exception=None
    r"|\b(?:errors?|err|failures?|exceptions?)\"?\s*[=:]\s*(?:null|none|nil|false|\"\"|''|\[\]|\{\})",
    re.IGNORECASE,
)
# Stack frames and other continuation lines: they belong to the error above them.
_FRAME = re.compile(
    r"^\s+(?:at |File \"|from |\.\.\. \d+ more|--- End of)|^\s*at [\w$.<>]+[.(]|^\s*#\d+ "
)
_CAUSE = re.compile(r"^\s*(?:Caused by:|Traceback \(most recent call last\))")


def classify(line: str, above: SeverityName = "info") -> SeverityName:
    """Severity of one line; an indented continuation line inherits `above` if that is higher."""
    own = own_severity(line)
    if line[:1] in (" ", "\t") and RANK[above] > RANK[own]:
        return above
    return own


def own_severity(line: str) -> SeverityName:
    head = line[:160]
    pri = _SYSLOG_PRI.match(head)
    if pri:
        sev = int(pri.group(1)) % 8
        level: SeverityName | None = "error" if sev <= 3 else "warning" if sev == 4 else "info"
    else:
        level = _explicit_level(head)
    if level == "error" or _CAUSE.match(line):
        return "error"
    low = line[:2000].lower()
    words = _has(low, _WORDS)
    if words and _NEGATED.search(low):
        low = _NEGATED.sub(" ", low)
        words = _has(low, _WORDS)
    if level == "warning" or (level != "error" and not words and _has(low, _WARN_WORDS)):
        return "warning"
    if words:
        return "warning" if level == "info" else "error"
    return "info"


def _has(low: str, words: tuple[str, ...]) -> bool:
    return any(w in low for w in words)


def _explicit_level(head: str) -> SeverityName | None:
    low = head.lower()
    tagged = _TAGGED.search(low) if _TAG_HINT.search(low) else None
    bare = _BARE.search(head)
    first = (
        tagged if bare is None or (tagged is not None and tagged.start() < bare.start()) else bare
    )
    if first is None:
        return None
    return _GROUPS[next(k for k, v in first.groupdict().items() if v is not None)]


def is_frame(line: str) -> bool:
    """A stack frame or trace continuation that says nothing on its own."""
    return _FRAME.match(line) is not None and not _has(line.lower(), _WORDS)


# --- strict templates ----------------------------------------------------------------------

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:\s?[AaPp][Mm])?"
# (pattern, replacement, a substring the pattern needs: cheap lines skip the regex)
_MASKS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(p), rep, need)
    for p, rep, need in (
        (r"\b[a-zA-Z][\w+.\-]*://[^\s\"'<>()\[\]{}\\]+", "<URL>", "://"),
        (r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b", "<EMAIL>", "@"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?:[:/]\d{1,5})?\b", "<IP>", "."),
        (
            rf"\b\d{{4}}[-/]\d{{2}}[-/]\d{{2}}(?:[T ]{_TIME})?"
            rf"(?:\s?(?:Z|UTC|[+-]\d{{2}}:?\d{{2}}))?",
            "<TS>",
            "",
        ),
        (
            rf"\b\d{{1,2}}/{_MON}/\d{{4}}(?::\d{{2}}:\d{{2}}:\d{{2}})?(?:\s[+-]\d{{4}})?",
            "<TS>",
            "/",
        ),
        (rf"\b{_MON}\s+\d{{1,2}}(?:,?\s+\d{{4}})?(?:\s+{_TIME})?", "<TS>", ""),
        (rf"\b{_TIME}\b", "<TS>", ":"),
        (r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b", "<UUID>", "-"),
        (r"\b(?:[0-9a-fA-F]{2}[:\-]){5}[0-9a-fA-F]{2}\b", "<MAC>", ""),
        (r"(?<![\w:.])(?:[0-9a-fA-F]{1,4}:){2,7}:?(?::?[0-9a-fA-F]{1,4})+(?![\w:])", "<IP>", ":"),
        (r"\b0x[0-9a-fA-F]+\b", "<HEX>", "0x"),
        (
            r"(?<![\w.\-])(?:[A-Za-z]:\\|~?/)[^\s\"'`,;()\[\]{}<>|=]*[/\\]"
            r"[^\s\"'`,;()\[\]{}<>|=]*",
            "<PATH>",
            "",
        ),
        (r"\b[0-9a-fA-F]{16,}\b", "<HEX>", ""),
        (r"[^\W\d]*\d\w*", "<N>", ""),
    )
)
_HOLDER = r"<(?:URL|EMAIL|IP|TS|UUID|MAC|HEX|PATH|STR|N)>"
_RUNS = re.compile(rf"{_HOLDER}(?:[\s,.:;/\-+]*{_HOLDER})+")
_SPACE = re.compile(r"\s+")


# A JSON key ("key":) or a quoted phrase is constant; a quoted single token is a value.
_DQUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"(\s*:)?")
_SQUOTED = re.compile(r"(?<![\w'])'[^'\s]+'(?![\w'])|`[^`\s]+`")


def _quoted(m: re.Match[str]) -> str:
    return m.group(0) if m.group(1) is not None or re.search(r"\s", m.group(0)) else "<STR>"


def strict_template(line: str) -> str:
    """The line with only its variable parts masked; constant words are all kept."""
    text = line
    for pattern, rep, need in _MASKS:
        if rep == "<PATH>":  # quoted values after paths (a quoted path is a path)
            text = _SQUOTED.sub("<STR>", _DQUOTED.sub(_quoted, text))
        if need in text:
            text = pattern.sub(rep, text)
    return _SPACE.sub(" ", _RUNS.sub("<*>", text)).strip()


# --- info templates (drain3) ---------------------------------------------------------------

_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
# Info-line masks for drain3: (regex, name, a substring the regex needs, so most lines skip it).
# Order matters: the wide patterns first, plain numbers last.
_DRAIN_MASKS = (
    (
        r"\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2}\b)?",
        "TS",
        ":",
    ),
    (rf"\b{_MONTH} +\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}\b", "TS", ":"),
    (r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "TS", ":"),
    (
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
        "UUID",
        "-",
    ),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b", "IP", "."),
    (r"\b0x[0-9a-fA-F]+\b", "HEX", "0x"),
    (r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b", "HEX", ""),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?", "NUM", ""),
)


class _GuardedMasker:
    """drain3's masker interface, skipping each regex on lines without its needed substring."""

    def __init__(self) -> None:
        self.rules = [(re.compile(p), f"<{name}>", need) for p, name, need in _DRAIN_MASKS]

    def mask(self, content: str) -> str:
        for pattern, rep, need in self.rules:
            if need in content:
                content = pattern.sub(rep, content)
        return content


def info_miner(sim_th: float) -> Any:
    """A drain3 miner for info lines: built in code, in memory, cheap masks."""
    config = TemplateMinerConfig()  # built in code: no drain3.ini lookup, no persistence
    config.drain_sim_th = sim_th
    config.drain_depth = 5
    config.profiling_enabled = False
    config.masking_instructions = [MaskingInstruction(p, name) for p, name, _ in _DRAIN_MASKS]
    miner = TemplateMiner(persistence_handler=None, config=config)
    miner.masker = _GuardedMasker()  # same interface as drain3.LogMasker, cheaper
    return miner
