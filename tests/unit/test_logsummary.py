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


def test_stack_frames_fold_into_their_error() -> None:
    lines = [
        "2024-01-01 10:00:00 INFO starting",
        "Traceback (most recent call last):",
        '  File "/app/main.py", line 3, in <module>',
        "    run()",
        "ValueError: bad input",
        "2024-01-01 10:00:01 INFO still alive",
        "java.lang.IllegalStateException: boom",
        "\tat com.example.Main.run(Main.java:10)",
        "Caused by: java.io.IOException: disk gone",
        "\t... 3 more",
    ]
    summary = summarize(lines, latest=0)
    by_last = {t.last: t for t in summary.templates}
    assert by_last["Traceback (most recent call last):"].trace_lines == 2
    assert by_last["ValueError: bad input"].severity == "error"
    assert by_last["java.lang.IllegalStateException: boom"].trace_lines == 1
    assert by_last["Caused by: java.io.IOException: disk gone"].severity == "error"
    assert by_last["2024-01-01 10:00:01 INFO still alive"].severity == "info"
    assert summary.lines_by_severity["trace"] == 4
    text = summary.render()
    assert "+2 trace lines" in text and "4 trace" in text.splitlines()[0]


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
        # failure words without any level, in any case
        ("sshd[12]: Failed password for root from 10.0.0.1 port 22", "error"),
        ("kernel: EXT4-fs error (device sda1): htree_dirblock_to_tree", "error"),
        ("mount: /data: cannot mount read-only", "error"),
        ("connection to 10.0.0.2 timed out after 30s", "error"),
        ("ata1.00: status: { DRDY ERR }", "error"),
        ("md/raid:md0: read error corrected (8 sectors at 2048 on sdb1)", "error"),
        ("Process 412 (java) killed by signal 9", "error"),
        # structured levels
        ('{"severity":"ERROR","message":"checkpoint starting"}', "error"),
        ("<11>1 2024-01-01T00:00:00Z host app - - - disk check", "error"),
        ("<12>Jan  1 00:00:00 host app: disk check", "warning"),
        ("<14>Jan  1 00:00:00 host app: disk check", "info"),
        ("01-01 10:00:00.123  412  433 E AndroidRuntime: FATAL EXCEPTION: main", "error"),
        ("E/ActivityManager(  412): ANR in com.example", "error"),
        ("W/System.err( 3093): at java.lang.Thread.run(Thread.java:856)", "warning"),
        ("SEVERE: Servlet.service() threw exception", "error"),
        ("Mar 03 10:00:00 host kernel: usb 1-1: device descriptor read/64, error -71", "error"),
        # an explicit info level with failure words: kept, as a warning
        ('level=info msg="retry after failed lease"', "warning"),
        ("INFO - warning: method `x` is never used", "warning"),
        # negations
        ("backup done: no errors, 0 failures", "info"),
        ("tests: failed=0 errors=0", "info"),
        ('{"level":"info","msg":"request served","error":null,"exception":""}', "info"),
        ("level=info msg=done err=nil", "info"),
        # a zero glued to another token is not a count
        ("QQ[10]: connectx to 183.57.48.75:80@0 failed: [50] Network is down", "error"),
        ("sync: 0 failed, 3 retried", "info"),
    ],
)
def test_classify(line: str, expected: str) -> None:
    assert classify(line) == expected


def _name(i: int) -> str:
    return "".join(chr(97 + (i // 26**k) % 26) for k in range(3))


def test_error_templates_are_kept_even_over_budget() -> None:
    lines = [f"ERROR {_name(i)} failure in {_name(i + 7)}z module" for i in range(120)]
    summary = summarize(lines, budget_chars=1000, latest=3)
    assert sum(t.severity == "error" for t in summary.templates) == summary.templates_total
    assert summary.templates_total == 120
    assert summary.note and "exceed" in summary.note
    text = summary.render()
    assert all(f" {_name(i)} failure in {_name(i + 7)}z module" in text for i in range(120))


def test_templates_differing_in_one_word_merge_with_their_values() -> None:
    users = ["admin", "oracle", "test", "admin", "guest"]
    lines = [f"sshd[{i}]: Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(users)]
    summary = summarize(lines, latest=0)
    (stat,) = summary.templates
    assert stat.count == 5 and stat.values[0] == "admin"
    assert set(stat.values) == {"admin", "oracle", "test", "guest"}
    assert "Invalid user {admin|" in summary.render()


def test_tight_budget_shortens_examples_then_variable_parts_never_constant_words() -> None:
    shapes = [f"ERROR {_name(i)}x backend {_name(i + 3)}y unreachable" for i in range(30)]
    users = [f"WARN login refused for user {_name(i)}q" for i in range(200)]
    info = [f"INFO request {i} served in {i % 50}ms from cache" for i in range(2000)]
    lines = [*info, *shapes, *users]
    roomy = summarize(lines, budget_chars=20000)
    tight = summarize(lines, budget_chars=2500)
    assert roomy.max_values is None and not roomy.compact
    assert tight.max_values is not None and tight.compact
    assert not [t for t in tight.templates if t.severity == "info"]  # info went first
    text = tight.render()
    for shape in shapes:
        assert shape.removeprefix("ERROR ") in text  # constant and variable words of errors
    assert "login refused for user {" in text and "more}" in text  # values shortened
    assert len(roomy.render()) <= 20000


def test_header_counts_are_true() -> None:
    lines = noisy_log()
    summary = summarize(lines, budget_chars=3000)
    by = summary.lines_by_severity
    assert by["error"] + by["warning"] + by["info"] + by["trace"] == len(lines)
    head = summary.render().splitlines()[0]
    assert f"{len(lines)} lines" in head and f"{by['error']} error," in head


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


def test_a_flood_of_distinct_errors_stops_at_the_hard_cap_and_says_so() -> None:
    lines = [f"ERROR {_name(i)}a {_name(i * 7)}b {_name(i * 13)}c broke" for i in range(3000)]
    summary = summarize(lines, budget_chars=1000, latest=0)
    text = summary.render()
    assert len(text) < 21_000
    assert summary.note and "not shown: past the hard cap" in summary.note
    shown = [t for t in summary.templates if t.severity == "error"]
    assert shown[0].first_line == 1 and len(shown) < 3000


def test_past_the_hard_cap_long_templates_are_cut_before_any_failure_is_left_out() -> None:
    giants = [
        f"ERROR huge{_name(k)} " + " ".join(f"q{_name(k * 900 + j)}" for j in range(900))
        for k in range(6)
    ]
    small = [f"ERROR {_name(i)}x small {_name(i * 5)}y failure" for i in range(40)]
    summary = summarize(giants + small, budget_chars=1000, latest=0)
    text = summary.render()
    assert len(text) < 21_000
    assert all(f"{_name(i)}x small {_name(i * 5)}y failure" in text for i in range(40))
    assert all(f"huge{_name(k)}" in text for k in range(6))
    assert summary.note and "cut to" in summary.note and "not shown" not in summary.note


def test_past_the_hard_cap_the_costliest_warnings_go_first() -> None:
    long = [
        f"WARN long{_name(k)} " + " ".join(f"z{_name(k * 300 + j)}" for j in range(250))
        for k in range(40)
    ]
    short = [f"WARN {_name(i)}s slow {_name(i * 3)}t call" for i in range(200)]
    lines = [*long, *short, "ERROR final step failed"]
    summary = summarize(lines, budget_chars=1000, latest=0)
    text = summary.render()
    assert len(text) < 21_000
    assert "ERROR final step failed" in text
    assert all(f"{_name(i)}s slow {_name(i * 3)}t call" in text for i in range(200))
    assert summary.note and "not shown: past the hard cap" in summary.note
