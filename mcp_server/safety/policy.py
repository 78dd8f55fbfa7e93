"""Who may be healed, how often, and when: pure logic, the time is always an argument.

Times are float seconds on one clock the caller keeps (normally `time.time()`, so a ledger
persisted in the store stays meaningful after a restart). Nothing here sleeps or does I/O.

`Policy.check()` applies its rules in this order and returns the first that says no:

1. mode: `observe` and `check` never change anything (OPSMEDIC_MODE=heal does);
2. scope: containers match OPSMEDIC_POLICY__SELECTOR on their labels or are in
   OPSMEDIC_POLICY__ALLOW; processes are those OpsMedic supervises (`[[processes]]`); jobs
   are in the allow list (`job:ID`, or a glob like `job:*`) or carry labels matching the
   selector; clean_disk needs OPSMEDIC_CLEAN_ROOTS. Allow entries may use `*` globs;
3. approval: actions listed in OPSMEDIC_POLICY__APPROVE (`*` = all) need a person's yes
   first (call again with approved=True once they gave it);
4. global cap: at most global_max_per_hour action starts across all targets per hour;
5. concurrency: at most max_concurrent actions in flight, never two on one target;
6. cooldown: cooldown_s between two actions on one target;
7. budget (restarts only): first restart at once, then backoff base_delay_s doubling to
   max_delay_s; at most max_restarts per window_s; exhausted means escalate to a person.
   The history is forgotten once the target has been healthy for healthy_reset_s.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mcp_server.errors import ConfigError, InvalidInput, Refused
from mcp_server.safety.ledger import HOUR_S, RestartLedger
from mcp_server.selectors import Selector, parse_selector
from mcp_server.settings import PolicySettings, Settings

ACTIONS = ("restart", "rollback", "clean_disk")
RESTARTABLE_KINDS = ("container", "process", "job")
CONCURRENCY_RETRY_S = 5.0  # when another action is in flight: look again after this

RULE_ORDER = ("mode", "scope", "approval", "global_cap", "concurrency", "cooldown", "budget")
Rule = Literal["mode", "scope", "approval", "global_cap", "concurrency", "cooldown", "budget", "ok"]


@dataclass(frozen=True)
class Budget:
    """Restart limits for one target plus the global ones (see PolicySettings)."""

    max_restarts: int = 3
    window_s: float = 900.0
    base_delay_s: float = 10.0
    max_delay_s: float = 300.0
    healthy_reset_s: float = 600.0
    global_max_per_hour: int = 20
    cooldown_s: float = 0.0
    max_concurrent: int = 2

    @classmethod
    def from_settings(cls, policy: PolicySettings) -> Budget:
        return cls(**{f.name: getattr(policy, f.name) for f in fields(cls)})


def backoff_delay(restarts_so_far: int, budget: Budget) -> float:
    """Delay required after the latest restart when `restarts_so_far` are in the window:
    0 for the first restart, then base, 2*base, 4*base ... capped at max_delay_s."""
    if restarts_so_far <= 0:
        return 0.0
    exponent = min(restarts_so_far - 1, 62)  # 2**62 is beyond any cap; avoids huge floats
    return float(min(budget.base_delay_s * 2**exponent, budget.max_delay_s))


def next_restart_delay(
    history: Sequence[float],
    now: float,
    budget: Budget,
    healthy_since: float | None = None,
) -> float | None:
    """Seconds from `now` until the next restart may start (0.0 = now), or None when the
    budget is exhausted (max_restarts within window_s): escalate to a person.

    `history` holds the start times of earlier restarts of this target. When the target has
    been healthy since `healthy_since` for at least healthy_reset_s, restarts before that
    are forgotten (like Kubernetes resetting CrashLoopBackOff after a stable run).
    """
    if healthy_since is not None and now - healthy_since >= budget.healthy_reset_s:
        history = [t for t in history if t >= healthy_since]
    recent = sorted(t for t in history if now - t < budget.window_s)
    if len(recent) >= budget.max_restarts:
        return None
    if not recent:
        return 0.0
    ready_at = recent[-1] + backoff_delay(len(recent), budget)
    return max(0.0, ready_at - now)


class Decision(BaseModel):
    """The verdict on one action. `allowed` means act now; otherwise `reason` says why not
    and `remedy` says what would allow it."""

    model_config = ConfigDict(frozen=True)

    action: str
    target: str
    allowed: bool
    rule: Rule
    reason: str
    remedy: str = ""
    needs_approval: bool = False
    wait_s: float = 0.0
    escalate: bool = False

    @property
    def verdict(self) -> str:
        """One word for the audit entry: allowed / needs_approval / wait / escalate / refused."""
        if self.allowed:
            return "allowed"
        if self.needs_approval:
            return "needs_approval"
        if self.escalate:
            return "escalate"
        return "wait" if self.wait_s > 0 else "refused"

    def message(self) -> str:
        """Reason and remedy in one line, for a tool error or an email."""
        return self.reason if not self.remedy else f"{self.reason} To allow it: {self.remedy}."

    def data(self, now: float | None = None) -> dict[str, Any]:
        """The decision as fields for a structured tool result (retry_at when it can wait)."""
        out: dict[str, Any] = {
            "refused": not self.allowed, "action": self.action, "target": self.target,
            "rule": self.rule, "verdict": self.verdict, "reason": self.reason,
            "remedy": self.remedy, "escalate": self.escalate, "wait_s": round(self.wait_s, 3),
        }  # fmt: skip
        if now is not None and self.wait_s > 0:
            out["retry_at"] = datetime.fromtimestamp(now + self.wait_s, UTC).isoformat()
        return out

    def refusal(self, now: float | None = None) -> Refused:
        return Refused(self.message(), self.data(now))

    def raise_if_refused(self, now: float | None = None) -> None:
        """Raise Refused with message() and the decision's fields unless it is allowed."""
        if not self.allowed:
            raise self.refusal(now)


def split_target(target: str) -> tuple[str, str]:
    """`"container:web"` -> `("container", "web")`; raise InvalidInput on another form."""
    kind, sep, name = target.partition(":")
    if not sep or not kind or not name or kind != kind.strip() or name != name.strip():
        raise InvalidInput(
            f"target {target!r} is not of the form kind:name, e.g. container:web, "
            "process:worker or job:invoice-bot"
        )
    return kind, name


@dataclass(frozen=True)
class _Ask:
    """One question to the policy; each rule reads it and may refuse."""

    action: str
    target: str
    labels: Mapping[str, str] | None
    now: float
    state: RestartLedger
    approved: bool

    def refuse(
        self, rule: Rule, reason: str, remedy: str, wait_s: float = 0.0, escalate: bool = False
    ) -> Decision:
        return Decision(
            action=self.action, target=self.target, allowed=False, rule=rule, reason=reason,
            remedy=remedy, needs_approval=rule == "approval", wait_s=wait_s, escalate=escalate,
        )  # fmt: skip


class Policy:
    """Decides whether an action on a target may run now. Pure: pass `now` and the ledger."""

    def __init__(self, settings: Settings, restartable: Iterable[str] = RESTARTABLE_KINDS) -> None:
        """`restartable`: the kinds a driver can act on (the server passes its registry's)."""
        self.settings = settings
        self.restartable = tuple(sorted(restartable))
        self.budget = Budget.from_settings(settings.policy)
        try:
            self.selector: Selector = parse_selector(settings.policy.selector)
        except InvalidInput as exc:
            raise ConfigError(f"OPSMEDIC_POLICY__SELECTOR is invalid: {exc}") from None
        self.allow: tuple[str, ...] = tuple(settings.policy.allow)
        self.approve: frozenset[str] = frozenset(settings.policy.approve)
        self.processes: frozenset[str] = frozenset(p.name for p in settings.processes)

    def check(
        self,
        action: str,
        target: str,
        labels: Mapping[str, str] | None,
        now: float,
        state: RestartLedger,
        approved: bool = False,
    ) -> Decision:
        """Apply the rules in order (see the module doc) and return the first refusal, or
        an allowed Decision. `labels` are the target's labels (containers, jobs) or None.
        `approved=True` says a person already said yes to this exact action."""
        if action not in ACTIONS:
            raise InvalidInput(f"action {action!r} is unknown; use one of {', '.join(ACTIONS)}")
        if action != "clean_disk":
            split_target(target)
        ask = _Ask(action, target, labels, now, state, approved)
        for name in RULE_ORDER:
            decision = getattr(self, f"_rule_{name}")(ask)
            if decision is not None:
                return decision
        return Decision(
            action=action, target=target, allowed=True, rule="ok", reason="allowed by policy."
        )

    # Each rule returns a refusal, or None when it lets the action pass.

    def _rule_mode(self, ask: _Ask) -> Decision | None:
        mode = self.settings.mode
        if mode == "heal":
            return None
        what = "read only" if mode == "observe" else "diagnose and alert only"
        return ask.refuse(
            "mode",
            f"OpsMedic is in {mode} mode ({what}), so it does not {_verb(ask.action)}.",
            "set OPSMEDIC_MODE=heal",
        )

    def _rule_scope(self, ask: _Ask) -> Decision | None:
        if ask.action == "clean_disk":
            if self.settings.clean_roots:
                return None
            return ask.refuse(
                "scope",
                "clean_disk has no directories it may clean.",
                "set OPSMEDIC_CLEAN_ROOTS to the directories OpsMedic may clean",
            )
        kind, name = split_target(ask.target)
        if kind not in self.restartable:
            return ask.refuse(
                "scope",
                f"{kind} targets cannot be restarted; only {', '.join(self.restartable)} can.",
                "restart the container, process or job behind it instead",
            )
        if self._in_scope(kind, name, ask.target, ask.labels):
            return None
        return ask.refuse("scope", *self._scope_hint(kind, name, ask.target))

    def in_scope(self, target: str, labels: Mapping[str, str] | None) -> bool:
        """May OpsMedic change this target (ignoring mode)? Its desired state is then running."""
        kind, name = split_target(target)
        return kind in self.restartable and self._in_scope(kind, name, target, labels)

    def _in_scope(
        self, kind: str, name: str, target: str, labels: Mapping[str, str] | None
    ) -> bool:
        if kind == "process":
            return name in self.processes
        if any(fnmatch.fnmatchcase(target, pattern) for pattern in self.allow):
            return True
        return bool(labels) and not self.selector.is_empty and self.selector.matches(labels)

    def _scope_hint(self, kind: str, name: str, target: str) -> tuple[str, str]:
        if kind == "process":
            return (
                f"process {name!r} is not one OpsMedic supervises, so it may not restart it.",
                f"add a [[processes]] entry named {name!r} to opsmedic.toml",
            )
        wanted = self.selector.equality_labels()
        if wanted:
            how = f"label the {kind} " + ",".join(f"{k}={v}" for k, v in wanted.items())
        elif not self.selector.is_empty:
            how = f"give the {kind} labels matching OPSMEDIC_POLICY__SELECTOR '{self.selector}'"
        else:
            how = "set OPSMEDIC_POLICY__SELECTOR"
        return (
            f"{target} is outside the healing policy (its labels do not match "
            f"'{self.selector}' and it is not in OPSMEDIC_POLICY__ALLOW).",
            f"{how} or add {target} to OPSMEDIC_POLICY__ALLOW",
        )

    def _rule_approval(self, ask: _Ask) -> Decision | None:
        if ask.approved or not ({ask.action, "*"} & self.approve):
            return None
        return ask.refuse(
            "approval",
            f"{ask.action} of {ask.target} needs a person's approval (OPSMEDIC_POLICY__APPROVE).",
            "a person must approve: reply APPROVE to the email, or answer the prompt",
        )

    def _rule_global_cap(self, ask: _Ask) -> Decision | None:
        starts = ask.state.starts_since(ask.now - HOUR_S)
        cap = self.budget.global_max_per_hour
        if len(starts) < cap:
            return None
        wait = max(0.0, starts[-cap] + HOUR_S - ask.now)
        return ask.refuse(
            "global_cap",
            f"{len(starts)} actions started in the last hour; the global cap is {cap}.",
            "a person should find out why so much is failing; the next slot frees in "
            f"{_secs(wait)} (OPSMEDIC_POLICY__GLOBAL_MAX_PER_HOUR)",
            wait_s=wait,
            escalate=True,
        )

    def _rule_concurrency(self, ask: _Ask) -> Decision | None:
        in_flight = ask.state.in_flight
        if ask.target in in_flight:
            return ask.refuse(
                "concurrency",
                f"an action on {ask.target} is already in progress.",
                "wait for it to finish and check its result",
                wait_s=CONCURRENCY_RETRY_S,
            )
        if len(in_flight) < self.budget.max_concurrent:
            return None
        return ask.refuse(
            "concurrency",
            f"{len(in_flight)} actions are in progress ({', '.join(sorted(in_flight))}); "
            f"the limit is {self.budget.max_concurrent}.",
            "wait for one to finish (OPSMEDIC_POLICY__MAX_CONCURRENT)",
            wait_s=CONCURRENCY_RETRY_S,
        )

    def _rule_cooldown(self, ask: _Ask) -> Decision | None:
        history = ask.state.history(ask.target)
        if not history or self.budget.cooldown_s <= 0:
            return None
        wait = history[-1] + self.budget.cooldown_s - ask.now
        if wait <= 0:
            return None
        return ask.refuse(
            "cooldown",
            f"{ask.target} was acted on {_secs(ask.now - history[-1])} ago; the cooldown is "
            f"{_secs(self.budget.cooldown_s)}.",
            f"wait {_secs(wait)} (cooldown)",
            wait_s=wait,
        )

    def _rule_budget(self, ask: _Ask) -> Decision | None:
        if ask.action == "clean_disk":
            return None
        state, b = ask.state, self.budget
        delay = next_restart_delay(
            state.history(ask.target), ask.now, b, state.healthy_since(ask.target)
        )
        if delay == 0.0:
            return None
        if delay is None:
            return ask.refuse(
                "budget",
                f"{ask.target} was restarted {b.max_restarts} times within {_secs(b.window_s)}; "
                "the restart budget is exhausted, so OpsMedic stops and escalates.",
                "a person must find and fix the cause; the budget resets after "
                f"{_secs(b.healthy_reset_s)} healthy, or as old restarts leave the window",
                escalate=True,
            )
        return ask.refuse(
            "budget",
            f"{ask.target} was restarted recently; backoff asks to wait before the next one.",
            f"wait {_secs(delay)} (backoff)",
            wait_s=delay,
        )


def _verb(action: str) -> str:
    return "delete files" if action == "clean_disk" else f"{action} anything"


def _secs(seconds: float) -> str:
    return f"{math.ceil(seconds - 1e-9):d} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def describe(settings: Settings) -> dict[str, Any]:
    """The active policy in plain terms, for the `opsmedic://policy` resource."""
    p = settings.policy
    budget = Budget.from_settings(p)
    schedule = [backoff_delay(n, budget) for n in range(budget.max_restarts)]
    return {
        "mode": settings.mode,
        "changes_allowed": settings.mode == "heal",
        "scope": {
            "selector": p.selector,
            "allow": list(p.allow),
            "processes": sorted(proc.name for proc in settings.processes),
            "clean_roots": list(settings.clean_roots),
            "rules": "containers and jobs: labels match the selector or target in allow "
            "(globs like job:* work); processes: those under [[processes]]; "
            "everything else is read-only",
        },
        "approve": list(p.approve),
        "budget": {**asdict(budget), "backoff_s": schedule},
        "order": list(RULE_ORDER),
        "on_exhausted": "escalate to a person; never retried silently",
    }
