"""Container facts and scoring constants of the rules RCA; the log cue tables are in rca_cues.

Exit codes are facts from the engine, not log lines; the constants tune how `rules._scores`
orders cues (the fatal line, the first strong cue).
"""

from __future__ import annotations

import re

from mcp_server.models import RcaCategory

# Words that undo a cue when they qualify it: "0 errors", "no error", "without failure".
NEGATION = re.compile(
    r"\b(?:no|not|zero|0|without|never|none|free of)\s+(?:\w+\s+){0,2}$", re.IGNORECASE
)

#: Facts from the container, not its logs: (category, weight, why) per exit code.
EXIT_CODES: dict[int, tuple[RcaCategory, float, str]] = {
    137: ("unknown", 1.0, "killed by SIGKILL (OOM killer not confirmed)"),
    143: ("unknown", 2.0, "stopped by SIGTERM (a requested stop, unless logs say otherwise)"),
    130: ("unknown", 2.0, "interrupted by SIGINT (Ctrl-C)"),
    139: ("code", 1.0, "crashed with SIGSEGV"),
    134: ("code", 1.0, "aborted with SIGABRT"),
    78: ("config", 1.0, "exit 78 (EX_CONFIG)"),
    126: ("config", 2.0, "command not executable"),
    127: ("config", 2.0, "command not found"),
}
OOM_FACT_WEIGHT = 6.0  # the kernel said so: OOMKilled or an oom event

# A cue on the line that ended the process weighs more: the fatal line names what stopped it.
FATAL_LINE = re.compile(
    r"\bFATAL\b|\bfatal error\b|\[emerg\]|\bpanic\b|\bcrit(?:ical)?\b|\baborting\b", re.IGNORECASE
)
FATAL_BONUS = 1.0
#: A fatal line that names no cause lends its bonus to a cue at most this many lines before it.
FATAL_REACH = 2
#: The first strong cue in the tail is usually the cause, what follows its symptoms.
FIRST_CAUSE_BONUS = 1.0
STRONG = 3.0  # a cue at least this heavy can be "the first cause"
