"""Redaction against a corpus of secret shapes and ordinary log lines (issue 12, item 3).

Prints how many secrets got through (must be 0), the false positives on ordinary lines,
and the cost per line. The corpus is tests/secret_corpus.py.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the repo on sys.path)

from mcp_server.safety.redaction import Redactor
from tests.secret_corpus import CONFIGURED, ORDINARY, SECRETS


def main() -> None:
    redactor = Redactor([CONFIGURED])
    through = [(line, secret) for line, secret in SECRETS if secret in redactor.redact_text(line)]
    changed = [(line, redactor.redact_text(line)) for line in ORDINARY]
    false_pos = [(a, b) for a, b in changed if a != b]
    lines = [line for line, _ in SECRETS] + ORDINARY
    t0 = time.perf_counter()
    for _ in range(200):
        for line in lines:
            redactor.redact_text(line)
    per_line_us = (time.perf_counter() - t0) / (200 * len(lines)) * 1e6
    print(f"secrets: {len(SECRETS)} shapes, {len(through)} got through")
    for line, secret in through:
        print(f"  THROUGH {secret!r} in {line!r}")
    print(f"ordinary lines: {len(ORDINARY)}, {len(false_pos)} false positives")
    for before, after in false_pos:
        print(f"  FALSE POSITIVE {before!r} -> {after!r}")
    print(f"cost: {per_line_us:.1f} us per line")


if __name__ == "__main__":
    main()
