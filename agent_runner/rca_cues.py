# ruff: noqa: E501  (a data table: one cue per line reads better than split regexes)
"""The log cues the rules RCA weighs: one table per category (data; scoring is in rules.py).

Each cue is a regex (case-insensitive unless said otherwise) and a weight. Weights follow one
scale so categories compare: 6 = the kernel's own verdict (its OOM-killer line), 4-4.5 =
names the cause outright (ENOSPC, EADDRINUSE, OOMKilled),
3 = a specific cause shape (a refused connection, a missing required setting, a nil
dereference), 2 = typical of the category but seen elsewhere too, 1 = a generic crash shape
that only decides when nothing better is there (a bare traceback). A negative weight is
evidence *against* the category (`OOMKilled: false`).

Cues describe failure shapes of runtimes and common servers, never one service's exact
message: they must hold on logs nobody has seen yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mcp_server.models import RcaCategory


@dataclass(frozen=True)
class Cue:
    """One pattern that is evidence for (or, with a negative weight, against) a category."""

    pattern: re.Pattern[str]
    weight: float
    label: str


def _cues(*rows: tuple[str, float, str], flags: int = re.IGNORECASE) -> tuple[Cue, ...]:
    return tuple(Cue(re.compile(p, flags), w, label) for p, w, label in rows)


_CONFIG_WORD = (
    r"(?:config(?:uration)?|settings?|\.ya?ml|\.toml|\.ini|\.conf\b|\.cfg\b|\.properties)"
)
_MISSING = r"(?:missing|not set|not specified|not defined|undefined|required|is empty|unset|must not be empty|cannot be empty|must be set)"
_SETTING = r"(?:env(?:ironment)?(?: var(?:iable)?s?)?|variable|setting|option|parameter|\w*(?:key|secret|password|token|url)\w*)"

CUES: dict[RcaCategory, tuple[Cue, ...]] = {
    "oom": _cues(
        (r"\bOOM_?Killed\b(?![\"']?\s*[:=]\s*[\"']?(?:false|0)\b)", 4, "OOMKilled"),
        (r"\bOOM_?Killed[\"']?\s*[:=]\s*[\"']?(?:false|0)\b", -4, "OOMKilled false"),
        (r"\bout of memory\b|\bOutOfMemory(?:Error)?\b|\bMemoryError\b", 4, "out of memory"),
        (
            r"\boom[-_ ]?kill(?:er|ing)?\b|Killed process \d+|Memory cgroup out of memory",
            6,
            "OOM killer",
        ),
        (r"heap (?:limit|out of memory)|allocation failed.*heap|Java heap space", 4, "heap"),
        (
            r"GC overhead|spent \[?[\d.]+m?s\]? collecting in the last|allocation stall",
            2.5,
            "GC thrash",
        ),
        (r"insufficient memory|cannot allocate memory|\bENOMEM\b|errno[ =:]*12\b", 3, "ENOMEM"),
        (r"(?:mmap|malloc|alloc\w*)\b.{0,40}\bfail", 2, "allocation failed"),
        (r"killed by signal 9|terminated by SIGKILL|signal: killed", 1, "SIGKILL"),
        # a shell's "Killed" for its child, memory pressure before a kill: the OOM killer's shape
        (r"^\s*(?:\S+: )?Killed\s*$|\bKilled\s+\S+.{0,40}\bmemory", 2, "killed"),
        (
            r"memory (?:usage|pressure|limit)\b.{0,40}(?:high|exceeded|reached|9\d(?:\.\d+)?%)",
            2,
            "memory pressure",
        ),
    ),
    "resource": _cues(
        (r"No space left on device|\bENOSPC\b|disk (?:is )?full|errno[ =:]*28\b", 4.5, "ENOSPC"),
        (r"Disk quota exceeded|\bEDQUOT\b", 4.5, "disk quota"),
        (r"too many open files|\bEMFILE\b|\bENFILE\b", 4, "file descriptors"),
        (r"file descriptors?\b.{0,60}\b(?:too low|limit|increase)", 4, "fd limit"),
        (r"\binotify\b.{0,60}\b(?:limit|watches|reached|instances)|max_user_watches", 4, "inotify"),
        (r"fsnotify|max_user_instances", 2, "fsnotify"),
        (r"(?:max user processes|ulimit -u|pids?[ _-]limit|\bnewosproc\b)", 4, "pids limit"),
        (r"(?:create|start)\w* (?:new )?(?:OS )?thread.{0,40}(?:errno=11|EAGAIN)", 3, "threads"),
        (
            r"resource temporarily unavailable.{0,30}(?:fork|thread)|\bfork\b.{0,30}(?:EAGAIN|resource temporarily unavailable)"
            r"|pthread_create failed|can't create (?:new )?thread",
            3,
            "fork",
        ),
        (r"vm\.max_map_count|max virtual memory areas", 4, "map count"),
        (r"(?:ulimit|rlimit|bootstrap checks? failed)", 2, "limits"),
    ),
    "port_conflict": _cues(
        (r"address\s+(?:already\s+)?in\s+use|\bEADDRINUSE\b", 4.5, "address in use"),
        (r"port is already allocated|port \d+ (?:is|was) (?:already )?in use", 4.5, "port taken"),
        (r"another (?:\w+ )?(?:is )?already running on port", 3, "another on port"),
        (r"Only one usage of each socket address", 4, "socket in use"),
        (
            r"\bbind\(?\)?\b.{0,40}\bfail|\bcannot bind\b|could not bind|still could not bind",
            1.5,
            "bind",
        ),
    ),
    "permission": _cues(
        (r"permission denied|\bEACCES\b|Errcode: 13\b|errno[ =:]*13\b", 4, "permission denied"),
        (r"\bEPERM\b|operation not permitted", 3.5, "EPERM"),
        (
            r"effective uid|must be run as root|requires? root|are you root|insufficient privileges|not privileged|\bnosuid\b",
            3,
            "privileges",
        ),
        (
            r"PermissionError|AccessDenied(?:Exception)?|access (?:is )?denied(?! for user)",
            4,
            "access",
        ),
        # SQLite's CANTOPEN in a container: the data directory is not the process's to write
        (r"unable to open database file|\bSQLITE_CANTOPEN\b", 3, "database file"),
        (
            r"(?:is )?not writable|read-only file system|\bEROFS\b|can ?not write to",
            3,
            "not writable",
        ),
        (
            r"wrong (?:ownership|permissions)|must be owned by|(?:volume|file) permissions",
            3,
            "ownership",
        ),
        (r"unprivileged|privileged port", 2, "privileged"),
    ),
    "config": _cues(
        (
            rf"{_CONFIG_WORD}.{{0,60}}\b(?:error|invalid|fail|not found|missing|unexpected)",
            3,
            "config error",
        ),
        # "named.conf.options:30: ...": a parser pointing at a line of a configuration file
        (
            r"[\w.-]+\.(?:conf|cfg|ini|ya?ml|toml|properties)(?:\.\w+)?:\d+:",
            2.5,
            "config file:line",
        ),
        (
            rf"\b(?:error|invalid|fail\w*|cannot|unable|could not)\b.{{0,40}}(?:load|read|pars)\w*.{{0,20}}{_CONFIG_WORD}",
            3,
            "config load",
        ),
        (
            rf"\b{_MISSING}\b.{{0,40}}\b{_SETTING}\b|\b{_SETTING}\b.{{0,40}}\b{_MISSING}\b",
            3,
            "missing setting",
        ),
        (
            r"\b(?:invalid|bad|malformed|broken)[\s_]+(?:\w+\s+)?config|config(?:uration)?[ _](?:is )?(?:invalid|error)"
            r"|ImproperlyConfigured|Config(?:uration)?(?:Error|Exception)\b|ValidationError.{0,40}\bsettings?\b",
            3,
            "invalid config",
        ),
        (
            r"\bmust (?:specify|set|provide|define)\b|\bis not specified\b|\bwas not provided\b",
            3,
            "must specify",
        ),
        (
            r"\byaml\b.{0,30}\b(?:line \d+|error|did not find|mapping values|could not find)|YAMLError|yaml\.(?:scanner|parser)",
            3.5,
            "YAML",
        ),
        (
            r"(?:json|toml|ini|yaml|xml|hcl)\w*?[ .]?(?:decode|parse|syntax|scanner)\w*? ?error",
            2.5,
            "parse error",
        ),
        (
            r"x509:|certificate (?:verify failed|signed by unknown|has expired|is not valid)|CERTIFICATE_VERIFY_FAILED",
            2.5,
            "certificates",
        ),
        (r"^\s*Usage: ", 1, "usage"),
        (r"cannot assign requested address|\bEADDRNOTAVAIL\b", 3, "bind address"),
        (
            r"(?:role|user|database|schema|bucket|topic|keyspace|vhost) \"?[\w.-]+\"? does not exist|Unknown database",
            2.5,
            "unknown name",
        ),
        (
            r"directive\b.{0,40}\b(?:not terminated|unknown|invalid|is not allowed|duplicate)|unknown directive",
            3.5,
            "directive",
        ),
        (
            r"\bfield \S+ not found in type|unknown (?:option|field|flag|setting|keyword|configuration key|variable|command|argument|shorthand flag)|unexpected argument|unrecognized arguments?|unrecognized (?:option|parameter|argument)",
            3,
            "unknown option",
        ),
        (
            r"invalid (?:value|argument|option|setting|syntax)|not a valid|failed to parse|syntax error",
            2,
            "invalid value",
        ),
        (
            # a deprecation is fatal when the log says so (an error level, "no longer supported")
            r"\b(?:error|fatal)\b.{0,60}\bdeprecated\b|\bdeprecated\b.{0,60}\b(?:no longer supported|removed|not supported)",
            3,
            "deprecated setting",
        ),
        (r"\bdeprecated\b.{0,40}\b(?:env|variable|setting|option)", 1.5, "deprecation"),
        (
            r"password authentication failed|authentication failed|Access denied for user|invalid credentials"
            r"|\bNOAUTH\b|\bWRONGPASS\b|authentication required|invalid (?:password|username|token|api key)|bad credentials",
            3.5,
            "credentials",
        ),
        (
            r"(?:No such file or directory|(?:file|path) not found|FileNotFound\w*).{0,60}"
            + _CONFIG_WORD
            + r"|"
            + _CONFIG_WORD
            + r"\S*.{0,30}(?:No such file or directory|not found)",
            2.5,
            "config file missing",
        ),
        (r"Cannot find module\b.{0,60}" + _CONFIG_WORD, 3.5, "config module missing"),
        (
            r"\bFATAL\b.{0,80}" + _CONFIG_WORD + r"|" + _CONFIG_WORD + r".{0,80}\bFATAL\b",
            2,
            "FATAL config",
        ),
        (
            r"executable file not found|command not found|no such file or directory.{0,30}exec|exec format error"
            r"|\bexec\b.{0,60}\bfailed\b.{0,40}no such file|missing script|no such (?:command|script)",
            2.5,
            "entrypoint",
        ),
    )
    # case-sensitive: an UPPER_CASE key is an environment setting, 'amount' a data bug
    + _cues((r"KeyError: '[A-Z][A-Z0-9_]{2,}'", 3.5, "KeyError env"), flags=0),
    "dependency": _cues(
        (
            r"connection\b.{0,80}\brefused|\bECONNREFUSED\b|errno[ =:]*111\b",
            4,
            "connection refused",
        ),
        (r"\bECONNRESET\b|connection reset by peer|broken pipe", 2, "connection reset"),
        (
            r"timed? ?out\b.{0,40}\bconnect|connect\w*\b.{0,40}\btimed? ?out|\bETIMEDOUT\b|deadline exceeded",
            3,
            "connect timeout",
        ),
        (r"\btimed out\b|\btimeout\b", 1, "timeout"),
        (
            r"ReadTimeout|ConnectTimeout|ConnectionTimeout|read timed out|\bi/o timeout\b",
            3,
            "client timeout",
        ),
        (
            r"getaddrinfo|\bEAI_AGAIN\b|\bENOTFOUND\b|Name or service not known|name resolution|no such host",
            3.5,
            "DNS",
        ),
        (
            r"could not translate host name|(?<!field )host not found|unknown ?(?:\w+ ){0,2}host\b|UnknownHost|(?:host|name) lookup fail|\bNXDOMAIN\b",
            3.5,
            "host lookup",
        ),
        (
            r"No route to host|\bEHOSTUNREACH\b|Network is unreachable|\bENETUNREACH\b",
            3.5,
            "unreachable",
        ),
        (
            r"could(?: not|n't) connect|cannot connect|unable to connect|can't connect|cannot_connect|failed to connect"
            r"|failed to (?:obtain|acquire|get|open) (?:a |the )?(?:\w+ )?connection"
            r"|Communications link failure|Connection is not available"
            r"|connection\b.{0,60}\bcould not be established|(?:broker|server|service|database|host) (?:may )?(?:not be|is not|isn't) (?:available|reachable|ready)",
            3,
            "cannot connect",
        ),
        (
            r"database system is (?:starting up|shutting down|in recovery)|not (?:yet )?accepting connections",
            3.5,
            "db starting",
        ),
        (
            r"upstream (?:connect error|timed out|prematurely closed)|no healthy upstream|502 Bad Gateway|503 Service Unavailable",
            2.5,
            "upstream",
        ),
        (
            r"waiting for (?:the )?(?:database|db|server|broker|connection)|is (?:the server|it) running",
            2,
            "waiting",
        ),
    ),
    "code": _cues(
        (
            r"nil pointer dereference|NullPointerException|NullReferenceException|null pointer"
            r"|assignment to entry in nil map|\bruntime error: ",
            3,
            "null deref",
        ),
        (
            r"index out of (?:range|bounds)|IndexOutOfBounds|out of range for slice|IndexError",
            3,
            "index",
        ),
        (r"panicked at|called `(?:Option|Result)::unwrap\(\)`", 3, "rust panic"),
        (r"^\s*panic:|goroutine \d+ \[running\]", 2, "go panic"),
        (
            r"concurrent map (?:writes|read and map write)|all goroutines are asleep|DATA RACE|deadlock detected",
            3,
            "concurrency",
        ),
        (
            r"FunctionClauseError|CaseClauseError|MatchError|UndefinedFunctionError|ArithmeticError",
            3,
            "elixir",
        ),
        (
            r"Call to undefined (?:function|method)|PHP (?:Fatal|Parse) error|Uncaught (?:Error|TypeError|Exception)",
            3,
            "php",
        ),
        (
            r"Cannot find module|MODULE_NOT_FOUND|ERR_MODULE_NOT_FOUND|is not a function|ReferenceError|is not defined",
            3,
            "node",
        ),
        (
            r"uninitialized constant|undefined (?:local variable or )?method|NoMethodError|\(NameError\)",
            3,
            "ruby",
        ),
        (
            r"(?:TypeError|AttributeError|ValueError|ZeroDivisionError|AssertionError|ImportError|ModuleNotFoundError|NameError|UnboundLocalError|RecursionError|SyntaxError|IndentationError)\b",
            2.5,
            "python",
        ),
        (
            r"ClassCastException|IllegalArgumentException|IllegalStateException|ArithmeticException|NoSuchMethodError|ClassNotFoundException|NoClassDefFoundError|UnsupportedOperationException",
            2.5,
            "jvm",
        ),
        (
            r"InvalidOperationException|ArgumentNullException|KeyNotFoundException|InvalidCastException",
            2.5,
            ".net",
        ),
        (
            r"segmentation (?:fault|violation)|\bSIGSEGV\b|core dumped|\bSIGABRT\b|assertion .{0,40}failed",
            2.5,
            "crash",
        ),
        (
            r"Traceback \(most recent call last\)|Exception in thread|Unhandled (?:Promise ?Rejection|exception)|uncaught exception",
            1,
            "traceback",
        ),
        (r"unhandled 'error' event|triggerUncaughtException", 0.5, "unhandled"),
    )
    # case-sensitive: "ValueError: ..." or "** (ArgumentError)" is an exception, "ERROR:" a level
    + _cues(
        (r"(?:^|[\s(])(?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)\b(?:\)|:)", 1.5, "exception"),
        flags=0,
    ),
    "unknown": _cues(
        (
            r"received (?:SIGTERM|SIGINT|signal 15|smart shutdown|fast shutdown|shutdown request)|shutdown (?:initiated )?(?:by|on) request"
            r"|(?:caught|got|handl\w+) (?:a )?(?:signal\W+)?(?:SIGTERM|SIGINT|\W*terminated\b)|(?:SIGTERM|SIGINT) received|terminated by SIGTERM",
            2,
            "requested stop",
        ),
        (
            r"\buser requested shutdown|\bgraceful(?:ly)? (?:shutdown|stop)|\bdocker(?:-compose| compose)? stop\b|\bStopping\b.{0,60}\.\.\.",
            2,
            "operator stop",
        ),
        (r"exited with code 143|Exited \(143\)", 1.5, "SIGTERM exit"),
    ),
}
