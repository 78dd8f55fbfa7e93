"""Audit middleware: every tool call leaves a chained audit entry, whatever happens.

- Destructive tools get an entry *before* they run ("started"); if that write fails the tool
  does not run. Every tool gets an entry after (ok / refused / error) with its duration.
- OpsMedic errors become tool errors carrying their message (written for the model);
  anything else is logged and reported as a short internal error without leaking details.
- Tools can add the policy decision or the target to the entry through `audit_context()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn

import mcp_types as mt
from fastmcp.exceptions import PromptError, ResourceError, ToolError
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult

from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError, Refused

logger = logging.getLogger(__name__)

_note: ContextVar[dict[str, Any] | None] = ContextVar("opsmedic_audit_note", default=None)


def audit_note(**fields: Any) -> None:
    """Let a tool add decision / target / incident_id to its own audit entry."""
    note = _note.get()
    if note is not None:
        note.update({k: v for k, v in fields.items() if v is not None})


@contextmanager
def _collect() -> Iterator[dict[str, Any]]:
    note: dict[str, Any] = {}
    token = _note.set(note)
    try:
        yield note
    finally:
        _note.reset(token)


def caller_identity(ctx: Any) -> tuple[str, str]:
    """(actor, transport) for the current request. With auth on: the token's client id.
    Without, a client's name is only what it says about itself, so it is recorded as
    "NAME (self-declared)"; only the in-process runner (memory transport) is "runner"."""
    transport = (getattr(ctx, "transport", None) or "memory") if ctx is not None else "memory"
    token = get_access_token()
    if token is not None and token.client_id:
        return str(token.client_id), transport
    try:
        params = ctx.session.client_params if ctx is not None else None
        name = params.client_info.name if params is not None else None
    except (AttributeError, RuntimeError):
        name = None
    if name == "opsmedic-runner" and transport == "memory":
        return "runner", transport
    return f"{name or 'unknown'} (self-declared)", transport


class AuditMiddleware(Middleware):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._destructive: dict[str, bool] = {}

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        args = dict(context.message.arguments or {})
        actor, transport = caller_identity(context.fastmcp_context)
        base: dict[str, Any] = {
            "actor": actor,
            "transport": transport,
            "tool": name,
            "args": args,
            "target": _target_of(args),
            "incident_id": _int_or_none(args.get("incident_id")),
        }
        if await self._is_destructive(context, name):
            try:
                await self._deps.auditor.record(**base, outcome="started")
            except Exception as exc:
                logger.exception("audit write failed; refusing destructive tool %s", name)
                raise ToolError(
                    f"refused: the audit log could not be written ({type(exc).__name__}), and "
                    "destructive actions never run unaudited. Check the store (GET /healthz)."
                ) from None
        started = time.perf_counter()
        with _collect() as note:
            try:
                result = await call_next(context)
            except Refused as exc:
                if not exc.data:
                    await self._fail(base, note, started, exc)
                await self._finish(base, note, "refused", started, error=str(exc))
                return _refusal_result(exc)
            except Exception as exc:
                if isinstance(exc.__cause__, Refused) and exc.__cause__.data:
                    await self._finish(base, note, "refused", started, error=str(exc.__cause__))
                    return _refusal_result(exc.__cause__)
                await self._fail(base, note, started, exc)
            outcome = "error" if getattr(result, "is_error", False) else "ok"
            await self._finish(base, note, outcome, started)
            return result

    async def _fail(
        self, base: dict[str, Any], note: dict[str, Any], started: float, exc: Exception
    ) -> NoReturn:
        """Record the failure, then re-raise it as a tool error a model can act on."""
        cause = exc if isinstance(exc, OpsMedicError) else exc.__cause__
        if isinstance(cause, OpsMedicError):
            outcome = "refused" if isinstance(cause, Refused) else "error"
            await self._finish(base, note, outcome, started, error=str(cause))
            raise ToolError(str(cause)) from None
        await self._finish(base, note, "error", started, error=type(cause or exc).__name__)
        raise exc

    async def _finish(
        self,
        base: dict[str, Any],
        note: dict[str, Any],
        outcome: str,
        started: float,
        error: str | None = None,
    ) -> None:
        entry = {**base, **{k: v for k, v in note.items() if k in base or k == "decision"}}
        if error:
            entry["args"] = {**entry["args"], "_error": error[:500]}
        try:
            await self._deps.auditor.record(
                **entry, outcome=outcome, duration_ms=(time.perf_counter() - started) * 1000
            )
        except Exception:  # the call already happened; losing its record must be loud
            logger.exception("audit write failed after tool %s (%s)", base["tool"], outcome)

    async def _is_destructive(self, context: MiddlewareContext[Any], name: str) -> bool:
        if name not in self._destructive:
            flag = False
            ctx = context.fastmcp_context
            if ctx is not None:
                try:
                    tool = await ctx.fastmcp.get_tool(name)
                except Exception:
                    tool = None
                ann = getattr(tool, "annotations", None)
                flag = bool(ann is not None and ann.destructive_hint)
            self._destructive[name] = flag
        return self._destructive[name]


class ErrorMiddleware(Middleware):
    """OpsMedic errors reach clients as MCP errors with their message, in one place: tools
    (through AuditMiddleware, which also audits them), resources and prompts. Anything else
    stays masked (mask_error_details) and is logged by fastmcp."""

    async def on_read_resource(
        self,
        context: MiddlewareContext[mt.ReadResourceRequestParams],
        call_next: CallNext[mt.ReadResourceRequestParams, Any],
    ) -> Any:
        try:
            return await call_next(context)
        except Exception as exc:
            raise _as_mcp_error(exc, ResourceError) from None

    async def on_get_prompt(
        self,
        context: MiddlewareContext[mt.GetPromptRequestParams],
        call_next: CallNext[mt.GetPromptRequestParams, Any],
    ) -> Any:
        try:
            return await call_next(context)
        except Exception as exc:
            raise _as_mcp_error(exc, PromptError) from None


def _as_mcp_error(exc: Exception, cls: type[Exception]) -> Exception:
    """The protocol error for an OpsMedicError (raised directly or wrapped by fastmcp)."""
    cause = exc if isinstance(exc, OpsMedicError) else exc.__cause__
    if isinstance(cause, OpsMedicError):
        return cls(str(cause))
    return exc


def _refusal_result(exc: Refused) -> ToolResult:
    """A refusal is a tool error whose structured content carries the decision's fields
    (rule, wait_s, retry_at, remedy), so clients schedule retries from data."""
    text = mt.TextContent(type="text", text=str(exc))
    return ToolResult(content=[text], structured_content=dict(exc.data), is_error=True)


def _target_of(args: dict[str, Any]) -> str | None:
    for key in ("target", "source", "name"):
        value = args.get(key)
        if isinstance(value, str):
            return value
    return None


def _int_or_none(value: Any) -> int | None:
    """An incident id fit for the audit column: a 64-bit int, else None (1e999, 2**70,
    "x" and the like are refused by the tool's own validation, and still audited)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -(2**63) <= number < 2**63 else None
