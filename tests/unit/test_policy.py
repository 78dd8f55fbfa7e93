"""Policy is pure: every test passes `now` explicitly; nothing sleeps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_server.errors import ConfigError, InvalidInput, Refused
from mcp_server.safety.policy import (
    Budget,
    Decision,
    Policy,
    RestartLedger,
    backoff_delay,
    describe,
    next_restart_delay,
    split_target,
)
from mcp_server.settings import Settings

MANAGED = {"opsmedic.managed": "true"}


def make_policy(mode: str = "heal", **policy: Any) -> Policy:
    extra: dict[str, Any] = {}
    if "processes" in policy:
        extra["processes"] = policy.pop("processes")
    if "clean_roots" in policy:
        extra["clean_roots"] = policy.pop("clean_roots")
    return Policy(Settings.model_validate({"mode": mode, "policy": policy, **extra}))


def restart(
    policy: Policy, ledger: RestartLedger, now: float, target: str = "container:web", **kw: Any
) -> Decision:
    return policy.check("restart", target, kw.pop("labels", MANAGED), now, ledger, **kw)


def do_restart(ledger: RestartLedger, target: str, now: float) -> None:
    ledger.record_start(target, now)
    ledger.record_result(target, True, now)


# --- the backoff schedule -----------------------------------------------------------------


def test_next_restart_delay_schedule() -> None:
    b = Budget()
    assert next_restart_delay([], 0.0, b) == 0.0
    assert next_restart_delay([0.0], 0.0, b) == 10.0
    assert next_restart_delay([0.0], 4.0, b) == 6.0
    assert next_restart_delay([0.0, 10.0], 10.0, b) == 20.0
    assert next_restart_delay([0.0, 10.0, 30.0], 30.0, b) is None
    assert next_restart_delay([0.0, 10.0, 30.0], 899.0, b) is None


def test_backoff_doubles_and_is_capped() -> None:
    b = Budget(max_restarts=10, base_delay_s=10, max_delay_s=300)
    assert [backoff_delay(n, b) for n in range(9)] == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff_delay(10_000, b) == 300  # no overflow for silly counts


def test_old_restarts_leave_the_window() -> None:
    b = Budget()
    # at 900 the restart at 0 is out of the 900 s window: 2 recent, last at 30 + 20 s ago
    assert next_restart_delay([0.0, 10.0, 30.0], 900.0, b) == 0.0


def test_crash_loop_restarts_at_0_10_30_then_escalates() -> None:
    """A target that dies right after every restart: ask at each moment backoff names."""
    policy, ledger = make_policy(), RestartLedger()
    now, restarts = 0.0, []
    decision = restart(policy, ledger, now)
    while not decision.escalate:
        if decision.allowed:
            restarts.append(now)
            do_restart(ledger, "container:web", now)
        else:
            assert decision.rule == "budget" and decision.wait_s > 0
            now += decision.wait_s
        decision = restart(policy, ledger, now)
    assert restarts == [0.0, 10.0, 30.0]
    assert decision.rule == "budget" and not decision.allowed and decision.wait_s == 0
    assert "exhausted" in decision.reason and decision.verdict == "escalate"


def test_waiting_decision_names_the_remaining_seconds() -> None:
    policy, ledger = make_policy(), RestartLedger()
    do_restart(ledger, "container:web", 0.0)
    d = restart(policy, ledger, 3.0)
    assert (d.allowed, d.rule, d.wait_s, d.escalate) == (False, "budget", 7.0, False)
    assert d.remedy == "wait 7 s (backoff)"
    assert d.verdict == "wait"


def test_history_resets_after_ten_minutes_healthy() -> None:
    policy, ledger = make_policy(), RestartLedger()
    for t in (0.0, 10.0, 30.0):
        do_restart(ledger, "container:web", t)
    ledger.mark_healthy("container:web", 40.0)
    ledger.mark_healthy("container:web", 100.0)  # still the same healthy streak
    assert restart(policy, ledger, 639.0).escalate
    assert restart(policy, ledger, 640.0).allowed


def test_failing_again_ends_the_healthy_streak() -> None:
    policy, ledger = make_policy(), RestartLedger()
    for t in (0.0, 10.0, 30.0):
        do_restart(ledger, "container:web", t)
    ledger.mark_healthy("container:web", 40.0)
    ledger.mark_unhealthy("container:web")
    assert restart(policy, ledger, 700.0).escalate


def test_budgets_are_per_target() -> None:
    policy, ledger = make_policy(), RestartLedger()
    for t in (0.0, 10.0, 30.0):
        do_restart(ledger, "container:web", t)
    assert restart(policy, ledger, 31.0).escalate
    assert restart(policy, ledger, 31.0, target="container:api").allowed


# --- the other rules ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["observe", "check"])
@pytest.mark.parametrize("action", ["restart", "clean_disk"])
def test_observe_and_check_modes_refuse_changes(mode: str, action: str) -> None:
    policy = make_policy(mode, clean_roots=["/tmp"])
    d = policy.check(action, "container:web", MANAGED, 0.0, RestartLedger())
    assert (d.allowed, d.rule, d.escalate, d.needs_approval) == (False, "mode", False, False)
    assert d.remedy == "set OPSMEDIC_MODE=heal"
    assert mode in d.reason


def test_scope_by_label_selector() -> None:
    policy, ledger = make_policy(), RestartLedger()
    assert restart(policy, ledger, 0.0, labels=MANAGED).allowed
    d = restart(policy, ledger, 0.0, labels={"opsmedic.managed": "false"})
    assert d.rule == "scope" and not d.allowed
    assert d.remedy == (
        "label the container opsmedic.managed=true or add container:web to OPSMEDIC_POLICY__ALLOW"
    )
    assert restart(policy, ledger, 0.0, labels=None).rule == "scope"


def test_scope_by_richer_selector_names_it_in_the_remedy() -> None:
    policy, ledger = make_policy(selector="env=prod,tier!=db"), RestartLedger()
    assert restart(policy, ledger, 0.0, labels={"env": "prod", "tier": "web"}).allowed
    d = restart(policy, ledger, 0.0, labels={"env": "prod", "tier": "db"})
    assert d.rule == "scope" and "'env=prod,tier!=db'" in d.remedy


def test_scope_by_allow_list_and_globs() -> None:
    policy = make_policy(allow=["container:web", "container:api-*", "job:*"])
    ledger = RestartLedger()
    assert restart(policy, ledger, 0.0, labels={}).allowed
    assert restart(policy, ledger, 0.0, target="container:api-2", labels={}).allowed
    assert restart(policy, ledger, 0.0, target="container:db", labels={}).rule == "scope"
    assert restart(policy, ledger, 0.0, target="job:invoice-bot", labels=None).allowed


def test_empty_selector_puts_nothing_in_scope_by_labels() -> None:
    policy = make_policy(selector="")
    d = restart(policy, RestartLedger(), 0.0, labels={"anything": "x"})
    assert d.rule == "scope" and "OPSMEDIC_POLICY__SELECTOR" in d.remedy


def test_jobs_in_scope_by_allow_list_or_selector() -> None:
    policy, ledger = make_policy(allow=["job:invoice-bot"]), RestartLedger()
    assert restart(policy, ledger, 0.0, target="job:invoice-bot", labels=None).allowed
    assert restart(policy, ledger, 0.0, target="job:payroll", labels=MANAGED).allowed
    d = restart(policy, ledger, 0.0, target="job:payroll", labels=None)
    assert d.rule == "scope" and "job:payroll to OPSMEDIC_POLICY__ALLOW" in d.remedy


def test_processes_in_scope_when_supervised() -> None:
    policy = make_policy(processes=[{"name": "worker", "argv": ["sleep", "1"]}])
    ledger = RestartLedger()
    assert restart(policy, ledger, 0.0, target="process:worker", labels=None).allowed
    d = restart(policy, ledger, 0.0, target="process:other", labels=None)
    assert d.rule == "scope" and "[[processes]]" in d.remedy


def test_other_kinds_cannot_be_restarted() -> None:
    policy = make_policy(allow=["probe:api"])
    d = restart(policy, RestartLedger(), 0.0, target="probe:api")
    assert d.rule == "scope" and "cannot be restarted" in d.reason


def test_clean_disk_needs_clean_roots_and_has_no_restart_budget() -> None:
    ledger = RestartLedger()
    d = make_policy().check("clean_disk", "host", None, 0.0, ledger)
    assert d.rule == "scope" and "OPSMEDIC_CLEAN_ROOTS" in d.remedy
    policy = make_policy(clean_roots=["/var/tmp/app"])
    for t in (0.0, 1.0, 2.0, 3.0):
        assert policy.check("clean_disk", "host", None, t, ledger).allowed
        do_restart(ledger, "host", t)


def test_approval_needed() -> None:
    policy, ledger = make_policy(approve=["restart"]), RestartLedger()
    d = restart(policy, ledger, 0.0)
    assert (d.allowed, d.needs_approval, d.rule) == (False, True, "approval")
    assert "reply APPROVE to the email" in d.remedy and d.verdict == "needs_approval"
    assert restart(policy, ledger, 0.0, approved=True).allowed
    assert (
        make_policy(approve=["restart"], clean_roots=["/x"])
        .check("clean_disk", "host", None, 0.0, ledger)
        .allowed
    )


def test_approve_star_means_every_action() -> None:
    policy = make_policy(approve=["*"], clean_roots=["/x"])
    assert restart(policy, RestartLedger(), 0.0).needs_approval
    assert policy.check("clean_disk", "host", None, 0.0, RestartLedger()).needs_approval


def test_approval_comes_before_budget_then_budget_still_applies() -> None:
    policy, ledger = make_policy(approve=["restart"]), RestartLedger()
    for t in (0.0, 10.0, 30.0):
        do_restart(ledger, "container:web", t)
    assert restart(policy, ledger, 31.0).rule == "approval"
    assert restart(policy, ledger, 31.0, approved=True).escalate


def test_global_cap_per_hour() -> None:
    policy, ledger = make_policy(global_max_per_hour=2), RestartLedger()
    do_restart(ledger, "container:a", 0.0)
    do_restart(ledger, "container:b", 10.0)
    d = restart(policy, ledger, 20.0)
    assert (d.rule, d.escalate, d.wait_s) == ("global_cap", True, 3580.0)
    assert restart(policy, ledger, 3600.0).allowed  # the start at 0 left the hour


def test_concurrency_limit_and_one_action_per_target() -> None:
    policy, ledger = make_policy(max_concurrent=1), RestartLedger()
    ledger.record_start("container:a", 0.0)
    d = restart(policy, ledger, 100.0)
    assert d.rule == "concurrency" and "container:a" in d.reason
    assert restart(policy, ledger, 100.0, target="container:a").reason.startswith(
        "an action on container:a is already in progress"
    )
    ledger.record_result("container:a", False, 5.0)
    assert restart(policy, ledger, 100.0).allowed


def test_cooldown_per_target() -> None:
    policy, ledger = make_policy(cooldown_s=60), RestartLedger()
    do_restart(ledger, "container:web", 0.0)
    d = restart(policy, ledger, 5.0)
    assert (d.rule, d.wait_s, d.remedy) == ("cooldown", 55.0, "wait 55 s (cooldown)")
    assert restart(policy, ledger, 5.0, target="container:api").allowed
    assert restart(policy, ledger, 60.0).allowed


def test_rule_order_mode_before_scope_before_everything() -> None:
    ledger = RestartLedger()
    ledger.record_start("container:web", 0.0)
    assert make_policy("observe").check("restart", "container:x", {}, 0, ledger).rule == "mode"
    assert make_policy().check("restart", "container:x", {}, 0, ledger).rule == "scope"


def test_malformed_target_or_action_is_invalid_input() -> None:
    policy = make_policy()
    for target in ("web", ":web", "container:", " container:web"):
        with pytest.raises(InvalidInput, match="kind:name"):
            policy.check("restart", target, MANAGED, 0.0, RestartLedger())
    with pytest.raises(InvalidInput, match="restart, rollback, clean_disk"):
        policy.check("reboot", "container:web", MANAGED, 0.0, RestartLedger())
    assert split_target("file:/var/log/a:b") == ("file", "/var/log/a:b")


def test_decision_message_and_raise() -> None:
    d = make_policy("check").check("restart", "container:web", MANAGED, 0, RestartLedger())
    assert d.message().endswith("To allow it: set OPSMEDIC_MODE=heal.")
    with pytest.raises(Refused, match="OPSMEDIC_MODE=heal"):
        d.raise_if_refused()
    restart(make_policy(), RestartLedger(), 0.0).raise_if_refused()  # allowed: no error


def test_invalid_selector_in_settings_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPSMEDIC_POLICY__SELECTOR"):
        make_policy(selector="=bad")


# --- ledger ---------------------------------------------------------------------------


def test_ledger_round_trips_through_json() -> None:
    ledger = RestartLedger()
    do_restart(ledger, "container:web", 1.0)
    ledger.record_start("container:web", 12.0)
    ledger.record_start("job:x", 13.0)
    ledger.record_result("job:x", False, 14.0)
    ledger.mark_healthy("job:x", 20.0)
    data = json.loads(json.dumps(ledger.to_dict()))
    restored = RestartLedger.from_dict(data)
    assert restored.history("container:web") == [1.0, 12.0]
    assert restored.healthy_since("job:x") == 20.0
    assert restored.in_flight == frozenset()  # died with the process that ran it
    assert RestartLedger.from_dict(data, keep_in_flight=True).in_flight == {"container:web"}
    assert restored.snapshot()["targets"]["job:x"]["last_result"] == {"ok": False, "at": 14.0}


def test_ledger_snapshot_and_pruning() -> None:
    ledger = RestartLedger(keep_s=100.0)
    do_restart(ledger, "container:web", 0.0)
    do_restart(ledger, "container:web", 150.0)
    assert ledger.history("container:web") == [150.0]  # the one at 0 is older than keep_s
    ledger.record_start("container:api", 160.0)
    snap = ledger.snapshot(now=200.0)
    assert snap["in_flight"] == ["container:api"]
    assert snap["starts_last_hour"] == 2
    assert snap["targets"]["container:web"]["restarts"] == [150.0]
    json.dumps(snap)


def test_describe_summarises_the_policy() -> None:
    settings = Settings.model_validate(
        {"mode": "heal", "policy": {"approve": ["clean_disk"], "allow": ["job:*"]}}
    )
    d = describe(settings)
    assert d["mode"] == "heal" and d["changes_allowed"] is True
    assert d["scope"]["selector"] == "opsmedic.managed=true"
    assert d["scope"]["allow"] == ["job:*"] and d["approve"] == ["clean_disk"]
    assert d["budget"]["backoff_s"] == [0.0, 10.0, 20.0]
    assert d["budget"]["max_restarts"] == 3 and d["budget"]["window_s"] == 900.0
    assert d["order"][0] == "mode" and d["order"][-1] == "budget"
    json.dumps(d)
