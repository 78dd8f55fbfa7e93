"""Bot-job ingest over WebSocket: the public face of ingest_schema / _feed / _client / _server.

Two ways events arrive, both ending in one `on_batch(IngestBatch)` call per batch:
- client mode (`OPSMEDIC_INGEST__URL` set): `HubClient` connects to a hub, resumes after the
  last stored event id, reconnects with jittered backoff, and carries restart commands back;
- server mode: `ingest_route(...)` is a Starlette `WebSocketRoute` (default `/ingest`) that bots
  push to, guarded by a bearer token, an Origin check, a frame size limit and a rate limit.

The event schema (`EVENT_SCHEMA`, `parse_event`) and each side's wire protocol are documented
in their modules. The store side (jobs, runs, detection) lives in `mcp_server.core.jobs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from starlette.routing import WebSocketRoute

from mcp_server.backends.ingest.client import (
    HubClient,
    LastEventId,
    WebhookRestarter,
    backoff_delay,
)
from mcp_server.backends.ingest.feed import IngestBatch, OnBatch
from mcp_server.backends.ingest.schema import (
    EVENT_SCHEMA,
    IDENTITY,
    TYPES,
    FieldMapping,
    IngestEvent,
    Rejection,
    parse_event,
    parse_frame,
)
from mcp_server.backends.ingest.server import TokenBucket, ingest_route
from mcp_server.errors import ConfigError
from mcp_server.settings import IngestSettings

__all__ = [
    "EVENT_SCHEMA",
    "IDENTITY",
    "TYPES",
    "FieldMapping",
    "HubClient",
    "IngestBatch",
    "IngestEvent",
    "JobRestarter",
    "OnBatch",
    "Rejection",
    "TokenBucket",
    "WebhookRestarter",
    "backoff_delay",
    "build_hub_client",
    "build_ingest_route",
    "build_restarter",
    "ingest_route",
    "mapping_from",
    "parse_event",
    "parse_frame",
]


class JobRestarter(Protocol):
    """Something that can ask a hub to restart a job; returns the command id."""

    async def restart(self, job_id: str, reason: str) -> str: ...


def _secret(value: object) -> str | None:
    get: Callable[[], str] | None = getattr(value, "get_secret_value", None)
    return get() if get is not None else None


def mapping_from(settings: IngestSettings) -> FieldMapping:
    try:
        return FieldMapping.build(settings.mapping, settings.type_map)
    except ValueError as exc:
        raise ConfigError(f"OPSMEDIC_INGEST__MAPPING / TYPE_MAP: {exc}") from None


def build_hub_client(
    settings: IngestSettings, on_batch: OnBatch, last_event_id: LastEventId | None = None
) -> HubClient | None:
    """The client-mode connection, or None when no hub URL is configured."""
    if not settings.url:
        return None
    return HubClient(
        settings.url,
        on_batch,
        token=_secret(settings.hub_token) or _secret(settings.token),
        headers=settings.headers,
        last_event_id=last_event_id,
        mapping=mapping_from(settings),
        resume=settings.resume,
        resume_param=settings.resume_param,
        batch_max=settings.batch_max,
        batch_wait_s=settings.batch_wait_s,
        max_frame_bytes=settings.hub_max_frame_bytes,
        backoff=(settings.reconnect_min_s, settings.reconnect_max_s),
    )


def build_ingest_route(settings: IngestSettings, on_batch: OnBatch) -> WebSocketRoute | None:
    """The server-mode endpoint, or None when no ingest token is configured (then no route)."""
    token = _secret(settings.token)
    if not token:
        return None
    return ingest_route(
        on_batch,
        token=token,
        path=settings.path,
        allowed_origins=settings.allowed_origins,
        max_frame_bytes=settings.max_frame_bytes,
        rate_per_s=settings.rate_per_s,
        mapping=mapping_from(settings),
        batch_max=settings.batch_max,
    )


def build_restarter(settings: IngestSettings, hub: HubClient | None) -> JobRestarter | None:
    """The webhook when configured, else the hub connection, else None (restart unsupported)."""
    if settings.webhook_url:
        return WebhookRestarter(settings.webhook_url, _secret(settings.webhook_token))
    return hub
