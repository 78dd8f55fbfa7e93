"""Destructive tools: restart and clean_disk. Policy decides; every step is audited."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
import mcp_types as mt
from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.backends.diskclean import CleanPlan
from mcp_server.core.targets import Target
from mcp_server.deps import deps_of
from mcp_server.errors import InvalidInput, NotFound, Refused
from mcp_server.middleware import audit_note
from mcp_server.tools._common import DESTRUCTIVE, IncidentId, add_tool
from mcp_server.tools._elicit import ask_yes_no

PLAN_VIEW_ITEMS = 50


async def restart(
    target: str,
    reason: Annotated[str, Field(min_length=3, max_length=500)],
    ctx: Context,
    incident_id: IncidentId | None = None,
) -> dict[str, Any] | mt.InputRequiredResult:
    """Restart container:NAME, process:NAME, job:ID or service:NAME (a rolling update); verify
    it stays up. A refusal carries rule, retry_at and remedy. incident_id must be this
    target's incident."""
    return await _act("restart", target, reason, ctx, incident_id)


async def rollback(
    target: str,
    reason: Annotated[str, Field(min_length=3, max_length=500)],
    ctx: Context,
    incident_id: IncidentId | None = None,
) -> dict[str, Any] | mt.InputRequiredResult:
    """Roll service:NAME back to its spec before the last update (when that update made it
    unhealthy); verify it converges. Same policy, approvals and budget as restart."""
    return await _act("rollback", target, reason, ctx, incident_id)


async def _act(
    action: str, target: str, reason: str, ctx: Context, incident_id: int | None
) -> dict[str, Any] | mt.InputRequiredResult:
    """One destructive action through the pipeline; a person at the client may approve it
    by elicitation when policy asks for approval and OPSMEDIC_POLICY__ELICIT is on."""
    deps = deps_of(ctx)
    actions = deps.services.actions
    parsed = Target.parse(target, actions.drivers.restartable)
    actor = _actor(ctx)
    decision = await actions.decide(parsed, action=action)
    audit_note(decision=decision.verdict, target=str(parsed))
    if decision.needs_approval and deps.settings.policy.elicit:
        question = f"OpsMedic wants to {action} {parsed} ({reason}). Approve this {action}?"
        answer = await ask_yes_no(ctx, question)
        if isinstance(answer, mt.InputRequiredResult):
            return answer  # stateless era: the client asks the person and calls again
        if answer is False:
            audit_note(decision="denied_by_elicitation")
            raise Refused(f"the person at the client declined to {action} {parsed}; nothing ran")
        if answer is True:
            audit_note(decision="approved_by_elicitation")
            who = f"{actor} (approved by elicitation)"
            return dict(await actions.run(action, parsed, reason, incident_id, who, approved=True))
    return dict(await actions.run(action, parsed, reason, incident_id, actor, decision=decision))


async def clean_disk(
    ctx: Context,
    action: Literal["plan", "apply"] = "plan",
    root: str | None = None,
    plan_id: str | None = None,
) -> dict[str, Any]:
    """Free disk space: action="plan" lists exactly what would be deleted (files in the
    clean roots by rule, optional Docker leftovers) with a plan_id; action="apply" with
    that plan_id deletes exactly those items, skipping any changed since."""
    deps = deps_of(ctx)
    planner = deps.services.planner
    plans: dict[str, CleanPlan] = deps.plans
    if action == "plan":
        plan = await anyio.to_thread.run_sync(planner.plan, root)
        plans[plan.plan_id] = plan
        audit_note(decision="plan", target=f"disk:{root or 'all roots'}")
        return dict(plan.view(PLAN_VIEW_ITEMS))
    if not plan_id:
        raise InvalidInput("apply needs the plan_id returned by clean_disk(action='plan')")
    found = plans.get(plan_id)
    if found is None:
        raise NotFound(f"no plan {plan_id!r} (plans live 1 h): call clean_disk(action='plan')")
    plan = found
    ledger = await deps.services.actions.ledger()
    decision = deps.services.policy.check(
        "clean_disk", f"disk:{plan_id}", None, deps.clock(), ledger
    )
    audit_note(decision=decision.verdict, target=f"disk:{plan_id}")
    decision.raise_if_refused(deps.clock())
    result = await anyio.to_thread.run_sync(planner.apply, plan)
    plans.pop(plan_id, None)
    return dict(result.to_dict(max_items=PLAN_VIEW_ITEMS))


def _actor(ctx: Context) -> str:
    from mcp_server.middleware import caller_identity

    return caller_identity(ctx)[0]


def register(server: FastMCP) -> None:
    add_tool(server, restart, DESTRUCTIVE)
    add_tool(server, clean_disk, DESTRUCTIVE)


def register_rollback(server: FastMCP) -> None:
    """Only on servers with a kind that can roll back (swarm services)."""
    add_tool(server, rollback, DESTRUCTIVE)
