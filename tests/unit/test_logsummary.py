"""Summary mode: templates with counts; errors and warnings always survive the budget."""

from __future__ import annotations

import logging
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcp_server.backends.logsummary import LogSummary, classify, summarize
from mcp_server.errors import InvalidInput

_COMPONENTS = ["api", "worker", "scheduler", "cache", "auth", "billing", "mailer", "search"]
_WORD_TEXT = (
    "session token refreshed cache entry evicted request served upstream healthy batch flushed "
    "index rebuilt shard rebalanced lease renewed webhook delivered report generated "
    "snapshot stored metrics exported config reloaded queue drained connection pooled "
    "template rendered invoice issued email queued backup verified heartbeat sent"
)
_WORDS = _WORD_TEXT.split()
_SLOTS = ["id={n}", "from {ip}", "in {ms}ms", "job {uuid}", "ratio {pct}%", "for user {n}"]


def _info_shapes(count: int = 40, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return [
        " ".join(rnd.sample(_WORDS, rnd.randint(3, 7)) + rnd.sample(_SLOTS, rnd.randint(1, 3)))
        for _ in range(count)
    ]


_INFO_SHAPES = _info_shapes()
# Distinct failures; the word in capitals is what each test looks for.
SEVERE = [
    ("ERROR", "database POOLEXHAUSTED after {n} waiters"),
    ("ERROR", "payment provider returned HTTP {n}: GATEWAYDOWN"),
    ("ERROR", "could not parse config CONFIGBROKEN at line {n}"),
    ("FATAL", "out of memory, OOMKILLED rss={n}MB"),
    ("ERROR", "disk full DISKFULL on /var/lib/app ({pct}% used)"),
    ("CRITICAL", "certificate CERTEXPIRED for host api.example.com"),
    ("ERROR", "Traceback (most recent call last): TRACEBACKMARK in handler {n}"),
    ("ERROR", "redis READONLYREPLICA write refused"),
    ("ERROR", "deadlock DEADLOCKFOUND detected on table orders, txn {hex}"),
    ("WARN", "slow query SLOWQUERY took {ms}ms"),
    ("WARNING", "retrying upstream RETRYUPSTREAM attempt {n}"),
    ("WARN", "queue depth QUEUEDEEP at {n} messages"),
    ("WARNING", "deprecated flag DEPRECATEDFLAG --legacy used"),
    ("WARN", "clock skew CLOCKSKEW of {ms}ms against ntp"),
    ("WARN", "rate limit RATELIMITNEAR {pct}% of quota"),
]


def _fill(shape: str, rnd: random.Random) -> str:
    return shape.format(
        method=rnd.choice(["GET", "POST", "PUT"]),
        res=rnd.choice(["orders", "users", "items"]),
        n=rnd.randint(1, 99999),
        ms=rnd.randint(1, 5000),
        ip=f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
        uuid=uuid.UUID(int=rnd.getrandbits(128)),
        pct=rnd.randint(0, 100),
        hex=f"0x{rnd.getrandbits(32):08x}",
    )


def noisy_log(total: int = 10_000, seed: int = 7) -> list[str]:
    """~40 info templates of skewed frequency and 15 rare error/warning templates."""
    rnd = random.Random(seed)
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    severe_at = {rnd.randrange(total): i % len(SEVERE) for i in range(len(SEVERE) * 3)}
    out = []
    for i in range(total):
        ts = (t0 + timedelta(milliseconds=37 * i)).isoformat(timespec="milliseconds")
        comp = rnd.choice(_COMPONENTS)
        if i in severe_at:
            level, shape = SEVERE[severe_at[i]]
            out.append(f"{ts} {level} [{comp}] {_fill(shape, rnd)}")
        else:
            shape = rnd.choices(_INFO_SHAPES, weights=range(1, 41))[0]
            out.append(f"{ts} INFO [{comp}] {_fill(shape, rnd)}")
    for k, (level, shape) in enumerate(SEVERE):  # make sure every one occurs at least once
        out[100 + k * 613] = f"2024-05-01T00:00:00.000+00:00 {level} [api] {_fill(shape, rnd)}"
    return out


def _marker(shape: str) -> str:
    return next(w for w in shape.split() if w.isupper() and len(w) > 6).rstrip(":")


def test_every_error_and_warning_template_is_kept_within_budget() -> None:
    lines = noisy_log()
    summary = summarize(lines, budget_chars=6000)
    text = summary.render()
    assert len(text) <= 6000
    severe = [t for t in summary.templates if t.severity != "info"]
    for level, shape in SEVERE:
        word = _marker(shape)
        owners = [t for t in severe if word in t.template]
        assert owners, f"{word} missing from the summary"
        assert owners[0].severity == ("warning" if level.startswith("WARN") else "error")
        assert word in text
    assert (
        len(severe)
        == summary.templates_by_severity["error"] + (summary.templates_by_severity["warning"])
    )


def test_counts_add_up_and_omissions_are_reported() -> None:
    lines = noisy_log()
    summary = summarize(lines, budget_chars=2500, latest=5)
    counted = sum(t.count for t in summary.templates) + summary.omitted_lines
    assert counted == len(lines)
    assert summary.omitted_templates > 0
    assert summary.note and "omitted" in summary.note
    assert f"{summary.omitted_templates} info templates" in summary.render()
    assert len(summary.latest) == 5  # shortened to fit the small budget, never dropped
    for shown, raw in zip(summary.latest, lines[-5:], strict=True):
        assert raw.startswith(shown.split("…[+")[0])


def test_masking_keeps_ids_from_exploding_templates() -> None:
    summary = summarize(noisy_log())
    assert summary.templates_total < 80  # 40 info shapes + 15 severe, not thousands
    assert any("<IP>" in t.template for t in summary.templates)
    assert any("<NUM>" in t.template for t in summary.templates)


def test_info_templates_are_ordered_by_frequency_with_examples() -> None:
    lines = ["2024-01-01T00:00:00Z INFO tick n=1"] * 50 + [
        "2024-01-01T00:00:00Z INFO rare event happened just now"
    ]
    summary = summarize(lines, latest=0)
    info = [t for t in summary.templates if t.severity == "info"]
    assert [t.count for t in info] == [50, 1]
    assert info[0].last == lines[-2]
    assert info[0].first_line == 1 and info[0].last_line == 50


def test_errors_never_merge_into_info_templates() -> None:
    lines = [f"2024-01-01T00:00:0{i % 10}Z INFO worker {i} finished job {i}" for i in range(30)]
    lines.append("2024-01-01T00:00:09Z ERROR worker 7 finished job 8")
    summary = summarize(lines)
    errors = [t for t in summary.templates if t.severity == "error"]
    assert len(errors) == 1 and errors[0].count == 1
    assert errors[0].last == lines[-1]


def test_stack_trace_lines_inherit_the_error() -> None:
    lines = [
        "2024-01-01 10:00:00 INFO starting",
        "Traceback (most recent call last):",
        '  File "/app/main.py", line 3, in <module>',
        "    run()",
        "ValueError: bad input",
        "2024-01-01 10:00:01 INFO still alive",
    ]
    summary = summarize(lines, latest=0)
    severity = {t.last: t.severity for t in summary.templates}
    assert severity['  File "/app/main.py", line 3, in <module>'.rstrip()] == "error"
    assert severity["    run()"] == "error"
    assert severity["ValueError: bad input"] == "error"
    assert severity["2024-01-01 10:00:01 INFO still alive"] == "info"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2024-01-01 ERROR boom", "error"),
        ("level=error msg=x", "error"),
        ('{"level":"fatal","msg":"x"}', "error"),
        ("panic: runtime error: index out of range", "error"),
        ("java.lang.NullPointerException at Foo", "error"),
        ("[warn] upstream slow", "warning"),
        ("WARNING:root:careful", "warning"),
        ("W0102 12:00:00.000 1 x.go:1] disk", "warning"),
        ("INFO 0 errors found", "info"),
        ("processed 12 items without error_count", "info"),
    ],
)
def test_classify(line: str, expected: str) -> None:
    assert classify(line) == expected


def test_error_templates_are_kept_even_over_budget() -> None:
    lines = [
        f"ERROR failure kind{i} " + " ".join(f"w{i}x{j}" for j in range(i % 7)) for i in range(120)
    ]
    summary = summarize(lines, budget_chars=1000, latest=3)
    assert sum(t.severity == "error" for t in summary.templates) == summary.templates_total
    assert summary.note and "exceed" in summary.note


def test_control_characters_are_stripped_and_empty_input_is_fine() -> None:
    summary = summarize(["INFO a\x1b[31mred\x00 \u2028x", "", "   "], latest=3)
    assert "\x1b" not in summary.render() and "\x00" not in summary.render()
    empty = summarize([])
    assert isinstance(empty, LogSummary) and empty.templates_total == 0
    assert "0 lines" in empty.render()


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="budget_chars"):
        summarize(["x"], budget_chars=10)
    with pytest.raises(InvalidInput, match="latest"):
        summarize(["x"], latest=-1)


def test_drain3_is_quiet_and_ignores_a_config_file_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "drain3.ini").write_text(
        '[MASKING]\nmasking = [{"regex_pattern": ".+", "mask_with": "ALL"}]\n'
    )
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.DEBUG):
        summary = summarize(["INFO service started on port 8080"])
    assert not [r for r in caplog.records if r.name.startswith("drain3")]
    assert summary.templates[0].template == "INFO service started on port <NUM>"
