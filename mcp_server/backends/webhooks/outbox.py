"""Webhook channels: incident events -> one durable delivery per (event, channel) -> HTTP POST.

`follow()` reads the event feed (local and, on a shared store, other processes' events) and
`enqueue()`s a delivery for each channel that subscribed to the event at its severity. A
delivery is a row in the store's message outbox (direction "hook") whose id is
`hook:<channel>:<event id>`: the store inserts it at most once, however many processes
follow the feed or how often a restart replays it (events up to CATCHUP_S old are replayed
at start, so an event stored just before a crash still goes out). The body is rendered and
redacted when queued; the secret header is added only on the wire, never stored.

`flush()` POSTs what is due, holding the "webhook-outbox" lease in the store so one process
sends at a time, and marks each row right after the receiver answered:
- 2xx: sent (audited). 408, 425, 429, 5xx, a refused connection or a timeout: retried with
  backoff (the channel's retry_base_s doubling to retry_max_s, or the receiver's
  Retry-After), "failed" (audited) after max_attempts. Other 4xx: failed at once (a wrong
  URL or secret does not get better by retrying).
- A channel that did not answer is not tried again for its other rows in the same pass.
A crash between the receiver's 2xx and the store update re-sends that one delivery after
the lease expires; the `X-OpsMedic-Delivery` header (and `delivery_id` in the json format)
carries the same id both times, so a receiver can drop the repeat.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from mcp_server import __version__
from mcp_server.backends.mail.outbox import next_due_delay
from mcp_server.backends.mail.smtp import retry_delay
from mcp_server.backends.webhooks.render import APPROVAL_TEXT, Notice, render
from mcp_server.core import duties
from mcp_server.errors import OpsMedicError
from mcp_server.models import Event, Incident, Message, utcnow
from mcp_server.settings_webhooks import WebhookSpec

if TYPE_CHECKING:
    from mcp_server.core.events import EventBus
    from mcp_server.safety.audit import Auditor
    from mcp_server.safety.redaction import Redactor
    from mcp_server.store.base import Store

logger = logging.getLogger(__name__)

LEASE_NAME = "webhook-outbox"
AUDIT_TOOL = "notify:webhook"  # audit entries of deliveries; /metrics counts them
CATCHUP_S = 900.0  # events this young are (re)considered at start
CATCHUP_EVENTS = 5000  # ... among at most this many newest events
RETRY_CODES = frozenset({408, 425, 429})
STATUS_KIND = {"escalated": "escalated", "resolved": "resolved", "awaiting_approval": "approval"}
OPENED_TEXT = "OpsMedic opened this incident and is diagnosing it."


def event_kind(event: Event) -> str | None:
    """opened / escalated / resolved / approval, or None for events channels never get."""
    if event.incident_id is None:
        return None
    if event.type == "incident.opened":
        return "opened"
    if event.type == "incident.status":
        return STATUS_KIND.get(str(event.data.get("status")))
    return None


def incident_link(base: str | None, incident_id: int) -> str | None:
    """The dashboard's incident page, `<base>/incidents/<id>`."""
    if not base or not base.lower().startswith(("http://", "https://")):
        return None
    return f"{base.rstrip('/')}/incidents/{incident_id}"


@dataclass
class ChannelState:
    """What `opsmedic status` and /healthz show of one channel (this process's view)."""

    sent: int = 0
    failed: int = 0
    last: str = "idle"
    last_error: str | None = None

    def line(self, name: str) -> str:
        tail = f" ({self.last_error})" if self.last_error and self.last != "sent" else ""
        return f"{name}: {self.last}{tail}, {self.sent} sent, {self.failed} failed"


@dataclass(frozen=True)
class _Answer:
    """How one POST went: sent, retry (with the receiver's Retry-After if any) or fail."""

    verdict: str  # sent / retry / fail
    text: str
    code: int | None = None
    retry_after_s: float | None = None


class WebhookOutbox:
    """Queues and delivers webhook notifications; see the module docstring."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        specs: Sequence[WebhookSpec],
        redactor: Redactor,
        auditor: Auditor,
        dashboard_url: str | None,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch: int = 50,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store, self.bus, self.redactor, self.auditor = store, bus, redactor, auditor
        self.specs = {s.name: s for s in specs}
        self.dashboard_url = dashboard_url
        self.clock = clock
        self.batch = batch
        self.transport = transport
        self._rng = rng or random.Random()
        self._holder = f"webhooks-{uuid.uuid4().hex[:12]}"
        # renewed before each POST, which its timeout bounds (connect, send, read: 3 phases)
        self._lease_ttl_s = 5.0 + 3 * max((s.timeout_s for s in specs), default=10.0)
        self._flush_lock = anyio.Lock()
        self._wake = anyio.Event()
        self.channels = {name: ChannelState() for name in self.specs}

    def wake(self) -> None:
        self._wake.set()

    def status_text(self) -> str:
        return "; ".join(state.line(name) for name, state in self.channels.items())

    # --- queueing ------------------------------------------------------------------------

    async def enqueue(self, event: Event) -> list[Message]:
        """Queue this event for every channel that wants it; returns the rows added now."""
        kind = event_kind(event)
        if kind is None or event.incident_id is None:
            return []
        severity = str(event.data.get("severity", "warning"))
        wanted = [s for s in self.specs.values() if s.wants(kind, severity)]
        if not wanted:
            return []
        incident = await self.store.get_incident(event.incident_id)
        added: list[Message] = []
        for spec in wanted:
            key = f"hook:{spec.name}:{event.id}"
            if await self.store.get_message(key) is not None:
                continue
            notice = self._notice(key, kind, event, incident)
            now = self.clock()
            body = json.dumps(render(spec.format, notice), ensure_ascii=False)
            message = Message(
                id=key, direction="hook", incident_id=event.incident_id, to=[spec.name],
                subject=kind, body_text=body, headers={"X-OpsMedic-Event": kind},
                next_attempt_at=now, created_at=now,
            )  # fmt: skip
            if await self.store.enqueue_message(message):
                added.append(message)
        if added:
            self.wake()
        return added

    def _notice(self, key: str, kind: str, event: Event, inc: Incident | None) -> Notice:
        red = self.redactor.redact_text
        data = event.data
        if kind == "approval":
            text = APPROVAL_TEXT  # never the request's words: no token, no approver list
        elif kind == "opened":
            text = OPENED_TEXT
        else:
            text = str(data.get("text", ""))
        title = inc.title if inc is not None else str(data.get("title", ""))
        assert event.incident_id is not None
        return Notice(
            delivery_id=key, event=kind, incident_id=event.incident_id,
            target=red(event.target or (inc.target if inc else "")),
            symptom=red(inc.symptom if inc else str(data.get("symptom", ""))),
            title=red(title)[:500], severity=str(data.get("severity", "warning")),
            status=str(data.get("status", "")), text=red(text)[:2000],
            count=int(data.get("count") or (inc.count if inc else 1)), occurred_at=event.ts,
            link=incident_link(self.dashboard_url, event.incident_id),
        )  # fmt: skip

    async def follow(self, wait_s: float = 5.0) -> None:
        """Queue deliveries for feed events, forever (from the CATCHUP window at start)."""
        since = self.clock() - timedelta(seconds=CATCHUP_S)
        cursor: int | None = None
        while True:
            try:
                if cursor is None:
                    cursor = max(0, await self.store.last_event_seq() - CATCHUP_EVENTS)
                for event in await self.bus.wait(cursor, timeout_s=wait_s):
                    if event.ts >= since:
                        await self.enqueue(event)
                    cursor = max(cursor, event.seq or cursor)
            except OpsMedicError as exc:  # the store is away: the rows wait, nothing is lost
                logger.info("webhooks: cannot read the event feed (%s); retrying", exc)
                await anyio.sleep(wait_s / 5)

    # --- delivering ----------------------------------------------------------------------

    async def flush(self, now: datetime | None = None) -> dict[str, list[str]]:
        """POST every due delivery once (up to `batch`); returns ids by sent/retry/fail
        (and "busy" when another process holds the lease)."""
        async with self._flush_lock:
            now = now or self.clock()
            report: dict[str, list[str]] = {"sent": [], "retry": [], "fail": [], "busy": []}
            if not await self.store.due_messages(now, limit=1, direction="hook"):
                return report  # nothing due: no lease write, no HTTP client
            if not await self._take_lease():
                report["busy"].append(LEASE_NAME)
                return report
            try:
                await self._flush_due(now, report)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.store.release_lease(LEASE_NAME, self._holder)
            return report

    async def _take_lease(self) -> bool:
        return await self.store.acquire_lease(
            LEASE_NAME, self._holder, self._lease_ttl_s, self.clock()
        )

    async def _flush_due(self, now: datetime, report: dict[str, list[str]]) -> None:
        resting: dict[str, datetime] = {}  # channels that did not answer in this pass
        due = await self.store.due_messages(now, limit=self.batch, direction="hook")  # leased
        async with httpx.AsyncClient(transport=self.transport, follow_redirects=False) as client:
            for msg in due:
                channel = msg.to[0] if msg.to else ""
                if channel in resting:
                    await self.store.update_message(
                        msg.model_copy(update={"next_attempt_at": resting[channel]})
                    )
                    continue
                if not await self._take_lease():
                    report["busy"].append(LEASE_NAME)
                    return
                done, verdict = await self._deliver(client, msg, now)
                with anyio.CancelScope(shield=True):  # a sent delivery must not look unsent
                    await self.store.update_message(done)
                report[verdict].append(done.id)
                if verdict == "retry":
                    resting[channel] = done.next_attempt_at
                if verdict != "retry":
                    await self._audit(done, verdict)

    async def _deliver(
        self, client: httpx.AsyncClient, msg: Message, now: datetime
    ) -> tuple[Message, str]:
        spec = self.specs.get(msg.to[0] if msg.to else "")
        attempts = msg.attempts + 1
        if spec is None:
            answer = _Answer("fail", f"channel {msg.to} is no longer configured")
        else:
            answer = await self._post(client, spec, msg)
        state = self.channels.setdefault(msg.to[0] if msg.to else "?", ChannelState())
        error = None if answer.verdict == "sent" else self.redactor.redact_text(answer.text)
        if answer.verdict == "retry" and spec is not None and attempts >= spec.max_attempts:
            answer = _Answer("fail", f"{error} (gave up after {attempts} attempts)", answer.code)
            error = answer.text
        state.last, state.last_error = answer.verdict, error
        update: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if answer.verdict == "sent":
            state.sent += 1
            update.update(status="sent", sent_at=now)
            logger.info("webhook %s delivered (HTTP %s)", msg.id, answer.code)
        elif answer.verdict == "fail":
            state.failed += 1
            update["status"] = "failed"
            logger.warning("webhook %s failed: %s", msg.id, error)
        else:
            assert spec is not None
            delay = retry_delay(attempts, spec.retry_base_s, spec.retry_max_s, rng=self._rng)
            if answer.retry_after_s is not None:
                delay = min(max(delay, answer.retry_after_s), spec.retry_max_s)
            update["next_attempt_at"] = now + timedelta(seconds=delay)
            logger.info("webhook %s deferred %.1f s: %s", msg.id, delay, error)
        return msg.model_copy(update=update), answer.verdict

    async def _post(self, client: httpx.AsyncClient, spec: WebhookSpec, msg: Message) -> _Answer:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"OpsMedic/{__version__}",
            "X-OpsMedic-Delivery": msg.id,
            "X-OpsMedic-Event": msg.subject,
        }
        secret = spec.header()
        if secret is not None:
            headers[secret[0]] = secret[1]
        try:
            resp = await client.post(
                spec.url, content=msg.body_text.encode(), headers=headers, timeout=spec.timeout_s
            )
        except httpx.TimeoutException:
            return _Answer("retry", f"no answer within {spec.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return _Answer("retry", f"cannot reach the receiver: {type(exc).__name__}: {exc}")
        code = resp.status_code
        if 200 <= code < 300:
            return _Answer("sent", "ok", code)
        said = f"HTTP {code}: {resp.text[:200].strip()}".strip(": ")
        if code in RETRY_CODES or code >= 500:
            return _Answer("retry", said, code, _retry_after(resp.headers.get("Retry-After")))
        return _Answer("fail", said, code)

    async def _audit(self, msg: Message, verdict: str) -> None:
        outcome = "sent" if verdict == "sent" else "failed"
        inc = await self.store.get_incident(msg.incident_id) if msg.incident_id else None
        try:
            await self.auditor.record(
                actor="opsmedic", transport="webhook", tool=AUDIT_TOOL, outcome=outcome,
                args={"channel": msg.to[0] if msg.to else "", "event": msg.subject,
                      "delivery": msg.id, "attempts": msg.attempts, "error": msg.last_error},
                target=inc.target if inc else None, incident_id=msg.incident_id,
            )  # fmt: skip
        except Exception:  # the delivery happened either way; the log keeps the trace
            logger.exception("webhook %s %s but its audit entry failed", msg.id, outcome)

    # --- the duty ------------------------------------------------------------------------

    async def run(self, poll_s: float = 1.0) -> None:
        """Follow the feed and deliver, forever; cancel to stop."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.follow)
            await self.deliver_forever(poll_s)

    async def deliver_forever(self, poll_s: float = 1.0) -> None:
        while True:
            self._wake = anyio.Event()
            try:
                report = await self.flush()
                self._show(report)
                delay = poll_s if report["busy"] else await self._next_delay(poll_s)
            except OpsMedicError as exc:  # the store is away for now
                logger.info("webhook flush: %s; retrying in %.1f s", exc, poll_s)
                duties.waiting(f"store: {exc}"[:300])
                delay = poll_s
            except Exception:
                logger.exception("webhook flush failed; retrying in %.1f s", poll_s)
                delay = poll_s
            with anyio.move_on_after(delay):
                await self._wake.wait()

    def _show(self, report: dict[str, list[str]]) -> None:
        down = [n for n, s in self.channels.items() if s.last == "retry"]
        if down:
            duties.waiting(f"receiver not answering: {self.status_text()}"[:300])
        else:
            duties.beat(detail=self.status_text()[:300])

    async def _next_delay(self, poll_s: float) -> float:
        return await next_due_delay(self.store, self.clock(), poll_s, direction="hook")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored: backoff applies)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
