"""HTTP routes beside /mcp: the dashboard page, its JSON API, the live stream, /metrics.

Access: the page and its static assets carry no data and are always served. Everything
under /api/ and /metrics needs `Authorization: Bearer <token>` when HTTP auth is configured
(OPSMEDIC_AUTH__TOKENS or JWT; the same verifier as /mcp) and is open otherwise, which is
only allowed on loopback (see auth.check_bind). Approving or denying from the dashboard
always needs a token: with auth off it is refused, since anyone on the host could click.
All JSON goes through the server's redactor; the page escapes everything it shows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth import AccessToken
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from mcp_server.core import alertmanager
from mcp_server.core.fleet import fleet_view
from mcp_server.deps import Deps
from mcp_server.errors import InvalidInput, NotFound, OpsMedicError
from mcp_server.models import IncidentStatus
from mcp_server.web import views
from mcp_server.web.metrics import OpsMetrics

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 10.0  # also how often an idle stream offers a host sample
STREAM_MAX_S = 600.0  # the browser reconnects (with its cursor) after this
STREAM_BATCH = 500
STATUS_OF = {
    "not_found": 404,
    "invalid_input": 400,
    "refused": 403,
    "conflict": 409,
    "unavailable": 503,
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
NO_AUTH_APPROVAL = (
    "approving from the dashboard needs an authenticated operator: configure "
    "OPSMEDIC_AUTH__TOKENS to approve from the dashboard (or reply to the approval email)"
)

NO_AUTH_ALERTS = (
    "the Alertmanager receiver needs authentication: set OPSMEDIC_AUTH__TOKENS and configure "
    "the receiver with http_config.authorization.credentials (an unauthenticated incident "
    "source is refused)"
)
MAX_ALERT_BODY = 4 * 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def register_web(server: FastMCP, deps: Deps) -> None:
    """Add the dashboard (/), the incident page, /static, the JSON API (/api/*) and /metrics."""
    web = Web(deps, server.auth)
    deps.web = web
    for path, methods, endpoint in web.routes():
        server.custom_route(path, methods=methods, include_in_schema=False)(endpoint)


class Web:
    """State of the web layer for one server: host history, chain cache, metrics, auth."""

    def __init__(self, deps: Deps, verifier: Any) -> None:
        self.deps = deps
        self.verifier = verifier  # has async verify_token(token) -> AccessToken | None
        self.history = views.HostHistory(deps)
        self.chain = views.ChainCache(deps)
        self.metrics = OpsMetrics(deps, self.chain)
        files = (p for p in STATIC.rglob("*") if p.is_file())
        self.assets = {p.relative_to(STATIC).as_posix(): p for p in files}

    def routes(self) -> list[tuple[str, list[str], Handler]]:
        get = ["GET"]
        return [
            ("/", get, self.page),
            ("/incidents/{incident_id:int}", get, self.page),
            ("/static/{path:path}", get, self.asset),
            ("/api", get, self.api(self.index)),
            ("/api/overview", get, self.api(self.overview)),
            ("/api/incidents", get, self.api(self.incidents)),
            ("/api/incidents/{incident_id:int}", get, self.api(self.incident)),
            ("/api/jobs", get, self.api(self.jobs)),
            ("/api/jobs/{job_id}/runs", get, self.api(self.job_runs)),
            ("/api/runs", get, self.api(self.runs)),
            ("/api/metrics/host", get, self.api(self.host)),
            ("/api/metrics/host/history", get, self.api(self.host_history)),
            ("/api/audit", get, self.api(self.audit)),
            ("/api/fleet", get, self.api(self.fleet)),
            ("/api/events", get, self.api(self.events)),
            ("/api/stream", get, self.stream),
            ("/api/approvals/{approval_id}", ["POST"], self.api(self.decide, NO_AUTH_APPROVAL)),
            ("/api/alerts/alertmanager", ["POST"], self.api(self.alerts, NO_AUTH_ALERTS)),
            ("/metrics", get, self.prometheus),
        ]

    # --- plumbing --------------------------------------------------------------------------

    async def authorize(self, request: Request, operator: str | None = None) -> AccessToken | None:
        """The caller's token when auth is on; None when off. Raises ApiError (401/403).
        `operator`: a token is required, and this is why when auth is off (403)."""
        if self.verifier is None:
            if operator:
                raise ApiError(403, operator)
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        access = None
        if scheme.lower() == "bearer" and token.strip():
            access = await self.verifier.verify_token(token.strip())
        if access is None:
            raise ApiError(
                401,
                "a bearer token is required: send Authorization: Bearer <token> "
                "(one of OPSMEDIC_AUTH__TOKENS or a valid JWT)",
                {"WWW-Authenticate": 'Bearer realm="opsmedic"'},
            )
        return access

    def api(self, fn: Callable[..., Awaitable[Any]], operator: str | None = None) -> Handler:
        """Wrap fn(request[, access]) -> JSON body: auth, redaction, errors as JSON.
        `operator`: a token is required (fn gets it); the text says why when auth is off."""

        async def endpoint(request: Request) -> Response:
            try:
                access = await self.authorize(request, operator)
                body = await (fn(request, access) if operator else fn(request))
            except ApiError as exc:
                return _error(exc.status, str(exc), exc.headers)
            except OpsMedicError as exc:
                return _error(STATUS_OF.get(exc.kind, 500), str(exc))
            body = self.deps.redactor.redact(body)
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

        return endpoint

    # --- page and assets ---------------------------------------------------------------

    async def page(self, _request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        path = self.assets.get(request.path_params["path"])  # only files shipped in the package
        if path is None:
            return _error(404, "no such static file")
        media = "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0]
        media = media or "application/octet-stream"
        return FileResponse(path, media_type=media, headers=PAGE_HEADERS)

    # --- JSON API ----------------------------------------------------------------------

    async def index(self, _request: Request) -> dict[str, Any]:
        paths = [p for p, _m, _e in self.routes() if p.startswith(("/api/", "/metrics"))]
        return {"endpoints": paths, "docs": "README.md, section Dashboard and API"}

    async def overview(self, _request: Request) -> dict[str, Any]:
        body = await views.overview(self.deps, self.history, self.chain)
        body["dashboard"] = {
            "auth": self.verifier is not None,
            "approvals": self.deps.services.approvals is not None,
        }
        return body

    async def incidents(self, request: Request) -> dict[str, Any]:
        statuses = _statuses(request.query_params.get("status"))
        limit = _int_param(request, "limit", 100, 1, 1000)
        with_rca = request.query_params.get("rca", "") in ("1", "true", "yes")
        rows = await self.deps.store.list_incidents(statuses, limit=limit)
        return {"incidents": await views.incident_rows(self.deps, rows, with_rca)}

    async def incident(self, request: Request) -> dict[str, Any]:
        incident_id = request.path_params["incident_id"]
        inc = await self.deps.store.get_incident(incident_id)
        if inc is None:
            raise NotFound(f"no incident {incident_id}; GET /api/incidents lists them")
        return await views.incident_detail(self.deps, inc)

    async def jobs(self, request: Request) -> dict[str, Any]:
        jobs = await self.deps.store.list_jobs(limit=_int_param(request, "limit", 200, 1, 1000))
        return {"jobs": [j.model_dump(mode="json") for j in jobs]}

    async def job_runs(self, request: Request) -> dict[str, Any]:
        job_id = request.path_params["job_id"]
        if await self.deps.store.get_job(job_id) is None:
            raise NotFound(f"no job {job_id!r}; GET /api/jobs lists them")
        limit = _int_param(request, "limit", 50, 1, 500)
        runs = await self.deps.store.list_runs(subject=job_id, limit=limit)
        return {"job_id": job_id, "runs": [r.model_dump(mode="json") for r in runs]}

    async def runs(self, request: Request) -> dict[str, Any]:
        limit = _int_param(request, "limit", 30, 1, 500)
        runs = await self.deps.store.list_runs(request.query_params.get("subject"), limit=limit)
        return {"runs": [r.model_dump(mode="json", exclude={"log"}) for r in runs]}

    async def host(self, _request: Request) -> dict[str, Any]:
        report, _new = await self.history.sample()
        if report is None:
            raise NotFound("this server has no host metrics backend")
        return views.host_view(report)

    async def host_history(self, _request: Request) -> dict[str, Any]:
        await self.history.sample()  # on-demand point (at most one per MIN_SAMPLE_S)
        return {"min_interval_s": self.history.min_interval_s, "points": self.history.points()}

    async def audit(self, request: Request) -> dict[str, Any]:
        entries = await self.deps.store.recent_audit(_int_param(request, "limit", 50, 1, 1000))
        verdict = await self.chain.get()
        return {
            "chain": verdict.model_dump(mode="json"),
            "entries": [e.model_dump(mode="json") for e in entries],
        }

    async def fleet(self, _request: Request) -> dict[str, Any]:
        return await fleet_view(self.deps, self.deps.services.fleet_source)

    async def events(self, request: Request) -> dict[str, Any]:
        limit = _int_param(request, "limit", 50, 1, 500)
        head = await self.deps.bus.head()
        raw = request.query_params.get("cursor")
        cursor = _int_param(request, "cursor", 0, 0, 2**62) if raw else max(0, head - limit)
        found = await self.deps.store.events_after(cursor, limit=limit)
        next_cursor = found[-1].seq if found else cursor
        return {"cursor": next_cursor, "head": head, "events": [views.event_row(e) for e in found]}

    async def decide(self, request: Request, access: AccessToken | None) -> dict[str, Any]:
        approval_id = request.path_params["approval_id"]
        try:
            decision = (await request.json()).get("decision")
        except (ValueError, AttributeError):
            decision = None
        if decision not in ("approve", "deny"):
            raise InvalidInput('send JSON {"decision": "approve"} or {"decision": "deny"}')
        approvals = self.deps.services.approvals
        if approvals is None:
            raise ApiError(501, "this server has no approval handler; reply to the approval email")
        actor = f"dashboard:{access.client_id if access else 'unknown'}"
        result = await approvals.decide_from_dashboard(approval_id, decision, actor)
        get = result.get if isinstance(result, dict) else partial(getattr, result)
        if get("ok", True) is False:  # e.g. DecisionOutcome("rejected", ...)
            raise ApiError(409, str(get("message", "the decision was rejected")))
        return {
            "approval_id": approval_id,
            "decision": decision,
            "actor": actor,
            "result": _jsonable(result),
        }

    async def alerts(self, request: Request, access: AccessToken | None) -> dict[str, Any]:
        """Alertmanager's webhook (payload version 4): incidents opened, bumped, resolved."""
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_ALERT_BODY:
            raise ApiError(413, f"payload larger than {MAX_ALERT_BODY} bytes")
        raw = await request.body()
        if len(raw) > MAX_ALERT_BODY:
            raise ApiError(413, f"payload larger than {MAX_ALERT_BODY} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidInput("the body is not JSON (an Alertmanager webhook payload)") from None
        note = alertmanager.parse_notification(body)
        actor = f"alertmanager:{access.client_id if access else 'unknown'}"
        return await alertmanager.AlertIntake(self.deps).accept(note, actor)

    # --- stream and metrics --------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        """Server-sent events: `message` = an event from the feed (JSON), `host` = a new host
        sample; a comment every KEEPALIVE_S. Resume with ?cursor= or Last-Event-ID."""
        try:
            await self.authorize(request)
            raw = request.query_params.get("cursor") or request.headers.get("last-event-id")
            cursor = int(raw) if raw else await self.deps.bus.head()
        except ApiError as exc:
            return _error(exc.status, str(exc), exc.headers)
        except ValueError:
            return _error(400, "cursor must be an integer event seq")
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._sse(cursor), media_type="text/event-stream", headers=headers)

    async def _sse(self, cursor: int) -> AsyncIterator[str]:
        yield f"retry: 2000\n: opsmedic stream from {cursor}\n\n"
        started = time.monotonic()
        while time.monotonic() - started < STREAM_MAX_S:
            events = await self.deps.bus.wait(cursor, KEEPALIVE_S, limit=STREAM_BATCH)
            for row in views.stream_rows(events):
                cursor = max(cursor, row["seq"])
                yield _sse_frame("message", self.deps.redactor.redact(row), event_id=cursor)
            if not events:
                yield ": keep-alive\n\n"
            point = await self._host_point()
            if point is not None:
                yield _sse_frame("host", point)

    async def _host_point(self) -> dict[str, Any] | None:
        try:
            report, new = await self.history.sample()
        except Exception:  # a failing psutil read must not end the live stream
            logger.exception("host sample for the dashboard stream failed")
            return None
        return views.host_point(report) if new and report is not None else None

    async def prometheus(self, request: Request) -> Response:
        try:
            await self.authorize(request)
        except ApiError as exc:
            return _error(exc.status, str(exc), exc.headers)
        body = await self.metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


# --- helpers -------------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _sse_frame(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer between {low} and {high}") from None
    return max(low, min(high, value))


def _statuses(raw: str | None) -> list[IncidentStatus] | None:
    """None = every status; "active" = all but resolved; else a comma list of statuses."""
    if not raw or raw == "all":
        return None
    if raw == "active":
        return list(views.ACTIVE)
    try:
        return [IncidentStatus(part.strip()) for part in raw.split(",") if part.strip()]
    except ValueError:
        allowed = ", ".join(s.value for s in IncidentStatus)
        raise InvalidInput(f"status must be active, all, or a comma list of: {allowed}") from None


def _jsonable(value: Any) -> Any:
    """The approval handler's result as JSON: pydantic models, dataclasses (plus their
    `ok` / `message` properties), plain JSON values; anything else as text."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for extra in ("ok", "message"):
            if isinstance(getattr(value, extra, None), bool | str):
                out[extra] = getattr(value, extra)
        return out
    if value is None or isinstance(value, bool | int | float | str | list):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
