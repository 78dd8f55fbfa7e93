"""Resource registration. Every resource is JSON with a stable shape, documented in README.md.

Shapes (all timestamps ISO-8601 UTC):
- opsmedic://jobs                -> {"jobs": [Job...], "count": n}
- opsmedic://jobs/{id}           -> {"job": Job, "active_incidents": [row...]}
- opsmedic://jobs/{id}/runs      -> {"job_id": id, "runs": [Run...]}  (newest first, 50)
- opsmedic://runs/{id}           -> {"run": Run}
- opsmedic://incidents/{id}      -> {"incident": Incident, "rca": Rca | null}
- opsmedic://rca/{incident_id}   -> {"rca": Rca | null, "incident_id": id}
- opsmedic://audit/recent        -> {"entries": [AuditEntry...], "limit": 50, "chain": verdict}
- opsmedic://policy              -> {"policy": {...}, "ledger": {...}, "mode": "check",
                                     "holds": [hold...]}  (active stored holds; label holds
                                     show on their targets)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastmcp import Context, FastMCP

from mcp_server.core.holds import Holds, hold_view
from mcp_server.core.incidents import ACTIVE, incident_row
from mcp_server.deps import Deps, deps_of
from mcp_server.errors import NotFound
from mcp_server.safety.policy import describe

AUDIT_RECENT_LIMIT = 50
RUNS_LIMIT = 50
JOBS_LIMIT = 500


def _json(data: Any) -> str:
    return json.dumps(data, default=str, separators=(",", ":"))


async def jobs(ctx: Context) -> str:
    """Every bot job reported by a hub: id, bot, status, last heartbeat, last run."""
    rows = await deps_of(ctx).store.list_jobs(limit=JOBS_LIMIT)
    return _json({"jobs": [j.model_dump(mode="json") for j in rows], "count": len(rows)})


async def job(job_id: str, ctx: Context) -> str:
    """One job and its active incidents."""
    deps = deps_of(ctx)
    found = await deps.store.get_job(job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}; read opsmedic://jobs for ids")
    active = [
        i for i in await deps.store.list_incidents(ACTIVE, 200) if i.target == f"job:{job_id}"
    ]
    return _json(
        {
            "job": found.model_dump(mode="json"),
            "active_incidents": [incident_row(i) for i in active],
        }
    )


async def job_runs(job_id: str, ctx: Context) -> str:
    """The job's newest 50 runs (one per execution), newest first."""
    rows = await deps_of(ctx).store.list_runs(subject=job_id, limit=RUNS_LIMIT)
    return _json({"job_id": job_id, "runs": [r.model_dump(mode="json") for r in rows]})


async def run(run_id: str, ctx: Context) -> str:
    """One run: status, timings, error, bounded log lines."""
    found = await deps_of(ctx).store.get_run(run_id)
    if found is None:
        raise NotFound(f"no run {run_id!r}; read opsmedic://jobs/{{id}}/runs for ids")
    return _json({"run": found.model_dump(mode="json")})


async def incident(incident_id: int, ctx: Context) -> str:
    """One incident with its timeline and RCA."""
    deps = deps_of(ctx)
    found = await deps.store.get_incident(int(incident_id))
    if found is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    rca = await deps.store.get_rca(found.id)
    return _json(
        {
            "incident": found.model_dump(mode="json"),
            "rca": rca.model_dump(mode="json") if rca else None,
        }
    )


async def rca(incident_id: int, ctx: Context) -> str:
    """The RCA recorded for an incident (null when none yet)."""
    found = await deps_of(ctx).store.get_rca(int(incident_id))
    return _json(
        {"incident_id": int(incident_id), "rca": found.model_dump(mode="json") if found else None}
    )


async def audit_recent(ctx: Context) -> str:
    """The 50 newest audit entries, newest first, and whether the whole chain verifies."""
    deps = deps_of(ctx)
    entries = await deps.store.recent_audit(AUDIT_RECENT_LIMIT)
    verdict = await deps.store.verify_audit()
    return _json(
        {
            "entries": [e.model_dump(mode="json") for e in entries],
            "limit": AUDIT_RECENT_LIMIT,
            "chain": verdict.model_dump(mode="json"),
        }
    )


async def policy(ctx: Context) -> str:
    """What may be changed, by whom, how often: mode, scope, approvals, budgets, the
    restart ledger (recent restarts per target, in-flight actions) and active holds."""
    deps = deps_of(ctx)
    return _json(await _policy_view(deps))


async def _policy_view(deps: Deps) -> dict[str, Any]:
    """The ledger is computed from the store's action records (shared by every OpsMedic)."""
    ledger = await deps.services.actions.ledger()
    holds = deps.services.holds
    held: list[dict[str, Any]] = []
    if isinstance(holds, Holds):
        now = holds.now()
        held = [hold_view(h, now) for h in await holds.list_active(now)]
    return {
        "mode": deps.settings.mode,
        "policy": describe(deps.settings),
        "ledger": ledger.snapshot(deps.clock()),
        "holds": held,
    }


RESOURCES: list[tuple[str, Callable[..., Awaitable[str]], str]] = [
    ("opsmedic://jobs", jobs, "jobs"),
    ("opsmedic://jobs/{job_id}", job, "job"),
    ("opsmedic://jobs/{job_id}/runs", job_runs, "job_runs"),
    ("opsmedic://runs/{run_id}", run, "run"),
    ("opsmedic://incidents/{incident_id}", incident, "incident"),
    ("opsmedic://rca/{incident_id}", rca, "rca"),
    ("opsmedic://audit/recent", audit_recent, "audit_recent"),
    ("opsmedic://policy", policy, "policy"),
]


def register(server: FastMCP) -> None:
    for uri, fn, name in RESOURCES:
        server.resource(uri, name=name, mime_type="application/json")(fn)
