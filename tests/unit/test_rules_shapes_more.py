"""Rules RCA: more failure shapes (config schema and parser errors, SQLite CANTOPEN, Go runtime
errors, SIGTERM phrasings) and a fatal line that names no cause."""

from __future__ import annotations

import pytest

from agent_runner.rules import triage
from tests.unit.test_rules import NOISE, incident, lines

CONFIG_LINES = [
    "failed to read config: field host not found in type server.Config",  # not a DNS failure
    'error decoding settings: json: unknown field "listen_adress"',
    "/etc/app/settings.toml:12: expected '=' after key",
    "loading configuration: unexpected token",
]


@pytest.mark.parametrize("line", CONFIG_LINES)
def test_schema_and_parser_errors_are_config(line: str) -> None:
    rca = triage(incident(), [*NOISE, *lines(line)])
    assert rca.category == "config", rca.summary
    assert [e.line for e in rca.evidence] == [line]


def test_a_real_host_lookup_is_still_a_dependency() -> None:
    rca = triage(incident(), lines("java.net.UnknownHostException: host not found: kafka"))
    assert rca.category == "dependency"


WARN = "WARN could not connect to metrics host, retrying"
YAML = "app.yaml: yaml: line 4: mapping values are not allowed in this context"


def test_fatal_line_without_cause_lends_its_bonus_to_the_line_before() -> None:
    """Without the fatal line the earlier connect warning wins; with it, the reason it printed."""
    assert triage(incident(), lines(WARN, YAML)).category == "dependency"
    rca = triage(incident(), lines(WARN, YAML, "exiting (due to fatal error)"))
    assert rca.category == "config", rca.summary
    assert YAML in [e.line for e in rca.evidence]


def test_fatal_bonus_is_lent_once_and_not_past_another_fatal_line() -> None:
    text = ["FATAL: the database system is starting up", "exiting (due to fatal error)"]
    before = triage(incident(), lines(text[0]))
    after = triage(incident(), lines(*text))
    assert before.category == after.category == "dependency"
    assert after.confidence == before.confidence


def test_fatal_bonus_reaches_only_two_lines_back() -> None:
    far = [YAML, "INFO flushing", "INFO closing", "exiting (due to fatal error)"]
    assert triage(incident(), lines(WARN, *far)).category == "dependency"


MORE_SHAPES = [  # (category, line, the cue's label the summary must name)
    ("permission", "sqlite3.OperationalError: unable to open database file", "database file"),
    ("permission", "Error: SQLITE_CANTOPEN: unable to open database file", "database file"),
    ("code", "panic: assignment to entry in nil map", "null deref"),
    ("code", 'E0101 1 runtime.go:78] Observed a panic: "runtime error: slice bounds', "null deref"),
    ("unknown", "INFO stopped: worker (terminated by SIGTERM)", "requested stop"),
    ("unknown", "caught SIGTERM, shutting down", "requested stop"),
]


@pytest.mark.parametrize(("category", "line", "label"), MORE_SHAPES)
def test_more_shapes(category: str, line: str, label: str) -> None:
    rca = triage(incident(), [*NOISE, *lines(line)])
    assert rca.category == category, rca.summary
    assert label in rca.summary
    assert [e.line for e in rca.evidence] == [line]
