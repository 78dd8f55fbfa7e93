"""Client mode: OpsMedic connects to a job hub's WebSocket and reads its events.

Protocol, as seen by the hub:
- OpsMedic opens `ws://` or `wss://` URL with `Authorization: Bearer <token>` (when a token is
  configured) plus any extra headers.
- Resume: with `resume="query"` (default) the URL gets `?after=<last stored event id>`
  (parameter name configurable; left out while no event was stored yet); with
  `resume="hello"` OpsMedic's first frame is always `{"type": "resume", "after": "<id>"}`
  (`"after": null` before the first event); with `resume="none"` it sends nothing (the hub
  may replay everything: duplicates are ignored by id).
- The hub sends frames: one event object or a JSON array of events (see ingest_schema).
- Restart commands go to the hub on the same socket:
  `{"type": "command", "command": "restart", "job": "<job id>", "reason": "...", "id": "<uuid>"}`.

Frames are parsed and handed to `on_batch` in batches (up to `batch_max` events, or whatever
arrived within `batch_wait_s`). The resume point advances only after on_batch returns, so a
batch that failed to store is asked for again on the next connection. Connection failures
are retried forever with jittered exponential backoff (reset once a connection delivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from mcp_server.backends.ingest.feed import Feed, IngestBatch, OnBatch
from mcp_server.backends.ingest.schema import IDENTITY, FieldMapping, FrameResult, parse_frame
from mcp_server.core import duties
from mcp_server.errors import ConfigError, InvalidInput, Refused, Unavailable

logger = logging.getLogger(__name__)
KEEPALIVE_S = 5.0  # while connected and quiet, the hub-client duty beats this often

ResumeMode = Literal["query", "hello", "none"]
#: Called with the client's `source` at each connect: the id to resume after (None: start).
LastEventId = Callable[[str], "str | Awaitable[str | None] | None"]
COMMANDS = frozenset({"restart"})


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Equal-jitter exponential backoff: between half and all of min(cap, base * 2**attempt)."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return ceiling / 2 + rand() * ceiling / 2


def with_query(url: str, param: str, value: str) -> str:
    """url with param=value set in its query string (replacing an earlier value)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    query.append((param, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact_url(url: str) -> str:
    """The URL without credentials or query string (tokens often travel in either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HubClient:
    """Reads a hub's event stream forever (`run()`); sends restart commands back to it."""

    def __init__(
        self,
        url: str,
        on_batch: OnBatch,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        last_event_id: LastEventId | None = None,
        mapping: FieldMapping = IDENTITY,
        resume: ResumeMode = "query",
        resume_param: str = "after",
        batch_max: int = 500,
        batch_wait_s: float = 0.05,
        max_frame_bytes: int = 16 * 1024 * 1024,
        backoff: tuple[float, float] = (0.5, 30.0),
        open_timeout_s: float = 10.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"OPSMEDIC_INGEST__URL={redact_url(url)!r} must start with ws://")
        self.url = url
        self.source = f"hub:{redact_url(url)}"
        self._on_batch = on_batch
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._last_event_id = last_event_id
        self._mapping = mapping
        self._resume = resume
        self._resume_param = resume_param
        self._batch = (batch_max, batch_wait_s)
        self._max_frame = max_frame_bytes
        self._backoff = backoff
        self._open_timeout = open_timeout_s
        self._rand = rand
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self.last_id: str | None = None
        self.stats = {"connects": 0, "frames": 0, "events": 0, "rejected": 0, "commands": 0}

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.connected

    async def run(self) -> None:
        """Connect, read, reconnect; returns only when cancelled."""
        attempt = 0
        while True:
            delivered = False
            try:
                delivered = await self._session()
            except asyncio.CancelledError:
                raise
            except websockets.exceptions.InvalidStatus as exc:
                status = exc.response.status_code
                logger.error("hub %s refused the connection: HTTP %s", self.source, status)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                logger.warning("hub %s connection lost: %s", self.source, exc or type(exc).__name__)
            except Exception:  # on_batch failed (store down): reconnect and resume from last_id
                logger.exception("hub %s: storing a batch failed; will resume", self.source)
            attempt = 0 if delivered else attempt + 1
            delay = backoff_delay(attempt, *self._backoff, rand=self._rand)
            duties.waiting(f"hub {self.source} unreachable (retry in {delay:.0f} s)")
            await asyncio.sleep(delay)

    async def _resume_point(self) -> str | None:
        if self._last_event_id is None:
            return self.last_id
        found = self._last_event_id(self.source)
        if inspect.isawaitable(found):
            found = await found
        return found if found is not None else self.last_id

    async def _session(self) -> bool:
        """One connection; True when it delivered at least one batch."""
        after = await self._resume_point()
        url = self.url
        if after is not None and self._resume == "query":
            url = with_query(url, self._resume_param, after)
        async with connect(
            url,
            additional_headers=self._headers,
            max_size=self._max_frame,
            open_timeout=self._open_timeout,
            user_agent_header="opsmedic-ingest",
        ) as ws:
            if self._resume == "hello":
                await ws.send(json.dumps({"type": "resume", "after": after}))
            self.stats["connects"] += 1
            logger.info("connected to hub %s (after %s)", self.source, after)
            self._ws = ws
            self._connected.set()
            duties.beat()
            try:
                return await self._pump(ws)
            finally:
                self._ws = None
                self._connected.clear()

    async def _pump(self, ws: ClientConnection) -> bool:
        feed: Feed[FrameResult] = Feed(*self._batch)
        reader = asyncio.create_task(self._read(ws, feed))
        delivered = False
        try:
            while batch := await feed.take():
                await self._deliver(batch)
                delivered = True
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        failure = None if reader.cancelled() else reader.exception()
        if failure is not None:
            raise failure
        return delivered

    async def _read(self, ws: ClientConnection, feed: Feed[FrameResult]) -> None:
        try:
            async for message in duties.keepalive(ws, KEEPALIVE_S):  # ws pings find dead links
                self.stats["frames"] += 1
                result = parse_frame(message, self._mapping)
                await feed.put(result, len(result.events) + len(result.rejected))
        finally:
            feed.close()

    async def _deliver(self, frames: list[FrameResult]) -> None:
        batch = IngestBatch(source=self.source)
        for frame in frames:
            batch.events.extend(frame.events)
            batch.rejected.extend(frame.rejected)
        await self._on_batch(batch)
        self.stats["events"] += len(batch.events)
        self.stats["rejected"] += len(batch.rejected)
        if batch.events:
            self.last_id = batch.events[-1].id

    async def send_command(self, job_id: str, command: str = "restart", reason: str = "") -> str:
        """Send a command to the hub over the open socket; returns the command's id."""
        if command not in COMMANDS:
            raise InvalidInput(f"command {command!r} is unknown; use one of {sorted(COMMANDS)}")
        ws = self._ws
        if ws is None:
            raise Unavailable(
                f"not connected to the job hub {self.source}; retry once it reconnects, "
                "or configure OPSMEDIC_INGEST__WEBHOOK_URL for restarts"
            )
        command_id = uuid.uuid4().hex
        frame = {"type": "command", "command": command, "job": job_id, "reason": reason}
        try:
            await ws.send(json.dumps({**frame, "id": command_id}))
        except websockets.exceptions.ConnectionClosed as exc:
            raise Unavailable(
                f"the job hub {self.source} closed the connection while sending {command}; "
                "retry once it reconnects"
            ) from exc
        self.stats["commands"] += 1
        return command_id

    async def restart(self, job_id: str, reason: str) -> str:
        """Ask the hub to restart a job (JobRestarter protocol)."""
        return await self.send_command(job_id, "restart", reason)


class WebhookRestarter:
    """Restarts jobs by POSTing the same command object to an HTTP webhook.

    Body: `{"type": "command", "command": "restart", "job": ..., "reason": ..., "id": ...}`
    with `Authorization: Bearer <token>` when configured. Any 2xx is success.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"OPSMEDIC_INGEST__WEBHOOK_URL={url!r} must start with http(s)://")
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client
        self._timeout = timeout_s

    async def restart(self, job_id: str, reason: str) -> str:
        command_id = uuid.uuid4().hex
        body: dict[str, Any] = {"type": "command", "command": "restart", "job": job_id}
        body.update(reason=reason, id=command_id)
        where = redact_url(self.url)
        try:
            if self._client is not None:
                response = await self._post(self._client, body)
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await self._post(client, body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"restart webhook {where} failed ({exc!r}); retry later") from exc
        if response.status_code in (401, 403):
            raise Refused(
                f"restart webhook {where} refused our credentials (HTTP {response.status_code}); "
                "check OPSMEDIC_INGEST__WEBHOOK_TOKEN"
            )
        if not response.is_success:
            raise Unavailable(
                f"restart webhook {where} answered HTTP {response.status_code}; retry later"
            )
        return command_id

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        return await client.post(self.url, json=body, headers=self._headers, timeout=self._timeout)
