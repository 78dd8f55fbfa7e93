"""Shapes of secrets in free text, for Redactor. Measured by bench/bench_redaction.py.

Each pattern is (compiled, replacement); "{m}" in a replacement is the marker, "{kv}" means
"keep the key and separator, hide the value". All are linear: no nested unbounded repeats.
"""

from __future__ import annotations

import re

#: Lower/mixed-case key names that hold secrets in `key=value` / `key: value` / JSON.
_KV_KEY = (
    r"[\w.-]*(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|auth[_-]?key|credentials?)(?!s\b)[\w.-]*"
)
#: UPPER_CASE environment names with a whole segment naming a secret (DB_PASS, X_API_KEY).
_ENV_KEY = (
    r"(?:[A-Z0-9]+_)*(?:PASS|PASSWD|PASSWORD|PASSPHRASE|PWD|TOKEN|SECRET|KEY|APIKEY"
    r"|CREDENTIALS?)(?:_[A-Z0-9]+)*"
)
_VALUE = r"(?P<val>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'&,;]+)"
_FLAG = r"--?[\w-]*(?:password|passwd|pass|pwd|secret|token|api-?key|key)"

TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys; without an END line (cut by a tail), the base64 lines that follow
    # (also JSON-escaped, "\\n") go, and the rest of the text stays.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
            r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|(?:(?:\r?\n|\\n)[A-Za-z0-9+/=]*)*)",
            re.DOTALL,
        ),
        "{m}",
    ),
    # Authorization headers, whatever the scheme (Bearer, Basic, token, Digest ...).
    (
        re.compile(
            r"(?P<key>\b(?:proxy-)?authorization)(?P<q>[\"']?)(?P<sep>\s*[=:]\s*[\"']?"
            r"(?:[A-Za-z]+\s+)?)(?P<val>[^\s\"',;]+)",
            re.IGNORECASE,
        ),
        "{kv}",
    ),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE), r"\1 {m}"),
    (re.compile(rf"(?P<key>{_FLAG})(?P<q>)(?P<sep>=|\s+)(?!-){_VALUE}", re.IGNORECASE), "{kv}"),
    (re.compile(rf"(?P<key>\b{_ENV_KEY})(?P<q>[\"']?)(?P<sep>\s*[=:]\s*){_VALUE}"), "{kv}"),
    (
        re.compile(rf"(?P<key>\b{_KV_KEY})(?P<q>[\"']?)(?P<sep>\s*[=:]\s*){_VALUE}", re.I),
        "{kv}",
    ),
    (re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\g<pre>{m}@"),
    (re.compile(r"(?P<pre>hooks\.slack\.com/services/)[A-Za-z0-9/_-]+"), r"\g<pre>{m}"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "{m}"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"), "{m}"),
    (re.compile(r"\bya29\.[0-9A-Za-z_\-]{20,}"), "{m}"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "{m}"),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}"), "{m}"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), "{m}"),
    (re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}"), "{m}"),
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), "{m}"),
    (re.compile(r"\bxapp-\d-[A-Za-z0-9-]{10,}"), "{m}"),
    (re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), "{m}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "{m}"),
)

#: Mapping keys whose whole value is hidden.
SECRET_KEY_RE = re.compile(
    r"password|passwd|passphrase|pwd|token|secret|api[_-]?key|key$|authorization|cookie"
    r"|credential|(?:^|_)pass(?:$|_)",
    re.IGNORECASE,
)
