"""Server mode: a `/ingest` WebSocket endpoint on OpsMedic's HTTP server where bots push events.

Protocol, as seen by a bot:
- Connect with `Authorization: Bearer <token>` (or `?token=<token>` when headers are not
  possible). Missing/wrong token: HTTP 401 before the WebSocket opens. A browser page from an
  Origin not in `allowed_origins` gets HTTP 403 (clients without an Origin header, i.e. bots,
  are not affected; `"*"` allows any origin). Servers without the ASGI denial-response
  extension close with code 1008 instead.
- Send frames holding one event object or a JSON array of events (schema: ingest_schema).
- Every frame gets exactly one reply, in order, once its events are stored (on the event
  feed; job/run records follow within the tracker's flush interval):
  `{"type": "ack", "accepted": n, "rejected": [{"index": i, "id": ..., "reason": ...}],
  "last_id": "<id of the frame's last accepted event>"}`. Duplicates count as accepted
  (they are stored already). A malformed frame or event is only rejected; the connection
  stays open.
- Rate limit, per connection: a token bucket of `rate_per_s` events per second (bursts up to
  one second's worth). Events beyond it are dropped (not stored) and reported first with
  `{"type": "error", "reason": "rate limited", "dropped": k, "dropped_ids": [...],
  "retry_after_s": s}`; resend those later. The connection stays open.
- A frame larger than `max_frame_bytes` closes the connection with code 1009.
- When events cannot be stored, the bot gets `{"type": "error", "reason": ...}` and close
  code 1011: reconnect and send again everything not acknowledged (ids make it idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from mcp_server.backends.ingest.feed import Feed, IngestBatch, OnBatch
from mcp_server.backends.ingest.schema import (
    IDENTITY,
    FieldMapping,
    FrameResult,
    Rejection,
    decode_frame,
    parse_items,
)
from mcp_server.errors import ConfigError

logger = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
MAX_DROPPED_IDS = 100


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; take(n) grants what is there."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self, n: int) -> int:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        granted = min(n, int(self._tokens))
        self._tokens -= granted
        return granted

    def wait_s(self, n: int = 1) -> float:
        """Seconds until n more tokens are there."""
        return max(0.0, (n - self._tokens) / self.rate) if self.rate > 0 else float("inf")


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """No Origin (a bot, not a browser) is fine; a browser's must be listed or "*" given."""
    if origin is None:
        return True
    wanted = {o.strip().rstrip("/").lower() for o in allowed}
    return "*" in wanted or origin.strip().rstrip("/").lower() in wanted


def bearer_of(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return ws.query_params.get("token")


@dataclass(frozen=True)
class IngestLimits:
    max_frame_bytes: int = 64 * 1024
    rate_per_s: float = 2000.0
    batch_max: int = 500
    batch_wait_s: float = 0.02


def ingest_route(
    on_batch: OnBatch,
    *,
    token: str,
    path: str = "/ingest",
    allowed_origins: Sequence[str] = (),
    max_frame_bytes: int = 64 * 1024,
    rate_per_s: float = 2000.0,
    mapping: FieldMapping = IDENTITY,
    batch_max: int = 500,
    batch_wait_s: float = 0.02,
) -> WebSocketRoute:
    """The /ingest endpoint as a Starlette route; add it to the HTTP app's routes.

    on_batch receives parsed events (batched across frames of one connection) and must
    store them before returning; its exceptions close the connection with 1011.
    """
    if not token:
        raise ConfigError(
            "the /ingest endpoint needs a token: set OPSMEDIC_INGEST__TOKEN (bots send it as "
            "Authorization: Bearer <token>)"
        )
    limits = IngestLimits(max_frame_bytes, rate_per_s, batch_max, batch_wait_s)
    origins = tuple(allowed_origins)

    async def endpoint(ws: WebSocket) -> None:
        given = bearer_of(ws)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            await _deny(ws, 401, "missing or wrong ingest token: send Authorization: Bearer")
            return
        if not origin_allowed(ws.headers.get("origin"), origins):
            await _deny(ws, 403, "origin not allowed: add it to OPSMEDIC_INGEST__ALLOWED_ORIGINS")
            return
        await ws.accept()
        await _Connection(ws, on_batch, limits, mapping).serve()

    return WebSocketRoute(path, endpoint, name="ingest")


async def _deny(ws: WebSocket, status: int, reason: str) -> None:
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    logger.warning("ingest connection from %s refused: %s", peer, reason)
    headers = {"WWW-Authenticate": 'Bearer realm="opsmedic-ingest"'} if status == 401 else None
    try:
        await ws.send_denial_response(PlainTextResponse(reason, status, headers=headers))
    except RuntimeError:  # the ASGI server lacks the denial-response extension
        await ws.close(code=CLOSE_POLICY, reason=reason[:120])


class _Connection:
    """One accepted bot connection: a reader (size, rate, parse) and a writer (store, ack)."""

    def __init__(
        self, ws: WebSocket, on_batch: OnBatch, limits: IngestLimits, mapping: FieldMapping
    ) -> None:
        self.ws = ws
        self.on_batch = on_batch
        self.limits = limits
        self.mapping = mapping
        self.bucket = TokenBucket(limits.rate_per_s)
        self.feed: Feed[FrameResult] = Feed(limits.batch_max, limits.batch_wait_s)
        self.source = f"ingest:{ws.client.host}:{ws.client.port}" if ws.client else "ingest"
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
        finally:
            self.feed.close()
            with contextlib.suppress(Exception):
                await writer  # acknowledge what was read before the socket went away

    async def _read(self) -> None:
        while not self._closed:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if _too_big(data, self.limits.max_frame_bytes):
                await self._close(CLOSE_TOO_BIG, f"frame over {self.limits.max_frame_bytes} bytes")
                return
            result = await self._parse(data)
            await self.feed.put(result, max(1, len(result.events)))

    async def _parse(self, data: str | bytes) -> FrameResult:
        items = decode_frame(data)
        if isinstance(items, Rejection):
            return FrameResult(rejected=[items], items=1)
        granted = self.bucket.take(len(items))
        if granted < len(items):
            await self._rate_limited(items[granted:])
            items = items[:granted]
        return parse_items(items, self.mapping)

    async def _rate_limited(self, dropped: list[Any]) -> None:
        ids = [i.get("id") for i in dropped[:MAX_DROPPED_IDS] if isinstance(i, dict)]
        reply = {"type": "error", "reason": "rate limited", "dropped": len(dropped)}
        reply.update(dropped_ids=ids, retry_after_s=round(self.bucket.wait_s(len(dropped)), 3))
        await self._send(reply)

    async def _write(self) -> None:
        while frames := await self.feed.take():
            batch = IngestBatch(source=self.source)
            for frame in frames:
                batch.events.extend(frame.events)
                batch.rejected.extend(frame.rejected)
            try:
                await self.on_batch(batch)
            except Exception as exc:
                logger.exception("ingest from %s: storing a batch failed", self.source)
                reason = f"could not store events ({type(exc).__name__}); resend unacked ones"
                await self._send({"type": "error", "reason": reason})
                await self._close(CLOSE_INTERNAL, "store failed")
                return
            for frame in frames:
                await self._send(_ack(frame))

    async def _send(self, reply: dict[str, Any]) -> None:
        if self._closed:
            return
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.send_json(reply)

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        logger.warning("ingest connection %s closed: %s (%s)", self.source, reason, code)
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code=code, reason=reason)


def _too_big(data: str | bytes, limit: int) -> bool:
    if isinstance(data, bytes) or len(data) > limit or len(data) * 4 <= limit:
        return len(data) > limit
    return len(data.encode()) > limit


def _ack(result: FrameResult) -> dict[str, Any]:
    return {
        "type": "ack",
        "accepted": len(result.events),
        "rejected": [r.as_dict() for r in result.rejected],
        "last_id": result.events[-1].id if result.events else None,
    }
