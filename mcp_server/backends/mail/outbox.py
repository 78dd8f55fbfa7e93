"""Outgoing mail: a persistent outbox in the store, delivered over SMTP with retries.

`Outbox.enqueue()` stores a redacted Message (its id is the idempotency key, so the same
notification is stored once); `Outbox.flush()` delivers what is due; `Outbox.run()` does
that forever and wakes up at once after an enqueue.

Delivery is at-least-once with a stable Message-ID: a message is marked "sent" right after
the server accepted its DATA (250). A crash between that 250 and the store update re-sends
the same mail with the same Message-ID on the next flush; mail clients drop the duplicate.
This is the standard transactional-outbox trade-off; nothing queued is ever lost.

Failures:
- 4xx replies, a disconnect (also in the middle of DATA) or a timeout during a message:
  retried with backoff (2 s doubling to 5 min, +10% jitter); "failed" after max_attempts.
- 5xx replies (and an address that cannot be sent at all): "failed" at once, never retried.
- The server cannot be reached at all (refused, timeout on connect, TLS or login failure):
  an outage, not a problem of the message. Every due message waits with backoff and is
  never given up, so an outage of any length loses nothing.
Several processes sharing one store take the "mail-outbox" lease, so only one sends.
"""

from __future__ import annotations

import hashlib
import logging
import random
import ssl
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Protocol

import anyio
from pydantic import BaseModel, Field

from mcp_server.backends.mail.compose import (
    THREAD_HEADERS,
    bound_text,
    check_headers,
    clean_text,
    compose,
    incident_thread_root,
    message_id_for,
    one_line,
    parse_recipients,
    thread_headers,
)
from mcp_server.backends.mail.smtp import SendFailed, SendFailure, SmtpLink, retry_delay
from mcp_server.core import duties
from mcp_server.errors import InvalidInput
from mcp_server.models import Message, utcnow
from mcp_server.settings import SmtpSettings

if TYPE_CHECKING:  # backends do not depend on the store package at run time
    from mcp_server.store.base import Store

logger = logging.getLogger(__name__)

LEASE_NAME = "mail-outbox"
MAX_BODY_CHARS = 100_000
MAX_HTML_CHARS = 300_000
NOT_CONFIGURED = (
    "mail is not configured: set OPSMEDIC_SMTP__HOST (and PORT, FROM, TLS, USERNAME, "
    "PASSWORD as needed). Queued mail is kept and sent once it is configured"
)
BUSY = "another OpsMedic process is sending the outbox right now; its mail will go out"


class TextRedactor(Protocol):
    def redact_text(self, text: str) -> str: ...


class FlushReport(BaseModel):
    """What one flush did. `sent`/`deferred`/`failed` hold message ids."""

    configured: bool = True
    busy: bool = False
    sent: list[str] = Field(default_factory=list)
    deferred: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    waiting: int = 0  # due messages left untouched (mail not configured)
    errors: dict[str, str] = Field(default_factory=dict)
    note: str | None = None


def _merge_headers(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """Overlay `extra` on `base`, header names compared case-insensitively."""
    out = dict(base)
    for name, value in extra.items():
        for old in [k for k in out if k.lower() == name.lower()]:
            del out[old]
        out[name] = value
    return out


class Outbox:
    """The persistent mail outbox: enqueue() stores, flush()/run() deliver.

    `redactor.redact_text` scrubs every subject, body and extra header before it is stored,
    so secrets reach neither the store nor the mail. `clock` gives "now" (UTC) for new
    messages and the lease; tests inject one. `domain` (default: the domain of
    OPSMEDIC_SMTP__FROM) names Message-IDs and incident thread roots. `tls_context` is for
    servers with a private CA (default: system trust store).
    """

    def __init__(
        self,
        store: Store,
        settings: SmtpSettings,
        redactor: TextRedactor,
        clock: Callable[[], datetime] = utcnow,
        domain: str | None = None,
        *,
        max_attempts: int = 12,
        base_delay_s: float = 2.0,
        max_delay_s: float = 300.0,
        batch: int = 50,
        tls_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.redactor = redactor
        self.clock = clock
        self.sender = settings.from_
        self.domain = domain or parseaddr(settings.from_)[1].rpartition("@")[2] or "localhost"
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.batch = batch
        self.tls_context = tls_context
        self._rng = rng or random.Random()
        self._holder = f"outbox-{uuid.uuid4().hex[:12]}"
        self._lease_ttl_s = 60.0 + 5 * settings.timeout_s
        self._flush_lock = anyio.Lock()
        self._wake = anyio.Event()

    @property
    def configured(self) -> bool:
        return bool(self.settings.host)

    def wake(self) -> None:
        """Make run() flush now instead of at its next poll."""
        self._wake.set()

    # --- enqueue -------------------------------------------------------------------------

    async def enqueue(
        self,
        to: str | Sequence[str],
        subject: str,
        text: str,
        html: str | None = None,
        incident_id: int | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> Message:
        """Store one outgoing mail (redacted) and return it; delivery happens in flush().

        `key` is the idempotency key and becomes Message.id: a second enqueue with the same
        key returns the stored message and sends nothing more. Without a key, the sha256 of
        recipients + subject + text + incident is used, so identical content is sent once;
        pass a key (e.g. "alert:42:3") to send the same text again on purpose.
        With `incident_id`, the mail joins the incident's thread (In-Reply-To/References);
        `headers` may add Reply-To, X-... or override the thread headers. HTML larger than
        MAX_HTML_CHARS is dropped and rebuilt from the text; text is capped at MAX_BODY_CHARS.
        """
        recipients = parse_recipients(to)
        extra = dict(headers or {})
        check_headers(extra)
        subject = one_line(self.redactor.redact_text(subject), 300)
        body = bound_text(self.redactor.redact_text(clean_text(text)), MAX_BODY_CHARS)
        body_html = (
            self.redactor.redact_text(html) if html and len(html) <= MAX_HTML_CHARS else None
        )
        msg_id = key if key is not None else _auto_key(recipients, subject, body, incident_id)
        if not msg_id or len(msg_id) > 200:
            raise InvalidInput("key must be 1..200 characters, e.g. 'alert:42:opened'")
        existing = await self.store.get_message(msg_id)
        if existing is not None:
            return existing
        now = self.clock()
        message = Message(
            id=msg_id,
            incident_id=incident_id,
            to=recipients,
            subject=subject,
            body_text=body,
            body_html=body_html,
            headers=await self._headers(msg_id, incident_id, extra),
            next_attempt_at=now,
            created_at=now,
        )
        if not await self.store.enqueue_message(message):  # lost a race with a twin
            return await self.store.get_message(msg_id) or message
        self.wake()
        return message

    async def _headers(
        self, msg_id: str, incident_id: int | None, extra: dict[str, str]
    ) -> dict[str, str]:
        out = {
            "Message-ID": message_id_for(msg_id, self.domain),
            "Auto-Submitted": "auto-generated",
        }
        if incident_id is not None:
            out["X-OpsMedic-Incident"] = str(incident_id)
            out.update(
                thread_headers(incident_id, self.domain, await self._thread_ids(incident_id))
            )
        thread = {h.lower() for h in THREAD_HEADERS}
        extra = {
            k: (v if k.lower() in thread else self.redactor.redact_text(v))
            for k, v in extra.items()
        }
        out = _merge_headers(out, extra)
        if incident_id is not None:  # replies must still map to the incident
            root = incident_thread_root(incident_id, self.domain)
            refs = next((k for k in out if k.lower() == "references"), "References")
            if root not in out.get(refs, ""):
                out[refs] = f"{root} {out.get(refs, '')}".strip()
        return out

    async def _thread_ids(self, incident_id: int) -> list[str]:
        earlier = await self.store.list_messages(incident_id=incident_id, direction="out", limit=50)
        earlier = sorted((m for m in earlier if m.status != "failed"), key=lambda m: m.created_at)
        return [m.headers.get("Message-ID") or message_id_for(m.id, self.domain) for m in earlier]

    # --- flush ---------------------------------------------------------------------------

    async def flush(self, now: datetime | None = None) -> FlushReport:
        """Try every due message once (up to `batch`); update the store after each one.

        Never raises for SMTP trouble: the report and each message's last_error say what
        happened. Without OPSMEDIC_SMTP__HOST, nothing is sent and the report says so.
        """
        async with self._flush_lock:
            now = now or self.clock()
            if not self.configured:
                waiting = await self.store.due_messages(now, limit=self.batch)
                return FlushReport(configured=False, waiting=len(waiting), note=NOT_CONFIGURED)
            if not await self._take_lease():
                return FlushReport(busy=True, note=BUSY)
            try:
                return await self._flush_due(now)
            finally:
                with anyio.CancelScope(shield=True):  # do not make others wait out the TTL
                    await self.store.release_lease(LEASE_NAME, self._holder)

    async def _take_lease(self) -> bool:
        return await self.store.acquire_lease(
            LEASE_NAME, self._holder, self._lease_ttl_s, self.clock()
        )

    async def _flush_due(self, now: datetime) -> FlushReport:
        report = FlushReport()
        link = SmtpLink(self.settings, self.tls_context)
        try:
            for msg in await self.store.due_messages(now, limit=self.batch):
                if not await self._take_lease():
                    report.busy, report.note = True, BUSY
                    break
                done = await self._attempt(link, msg, now)
                # before the next message goes out; a shutdown (cancel) right after the
                # server's 250 must not leave a sent mail looking unsent
                with anyio.CancelScope(shield=True):
                    await self.store.update_message(done)
                bucket = {"sent": report.sent, "failed": report.failed}.get(done.status)
                (report.deferred if bucket is None else bucket).append(done.id)
                if done.last_error:
                    report.errors[done.id] = done.last_error
        finally:
            await link.quit()
        return report

    async def _attempt(self, link: SmtpLink, msg: Message, now: datetime) -> Message:
        try:
            mail = compose(msg, self.sender, self.domain)
        except (InvalidInput, ValueError) as exc:  # stored by hand or by an older version
            failure = SendFailure(f"the message cannot be composed: {exc}", True, outage=False)
            return self._after_failure(msg, failure, now)
        recipients = [parseaddr(r)[1] for r in msg.to]
        try:
            refused = await link.send(mail, parseaddr(self.sender)[1], recipients)
        except SendFailed as failed:
            return self._after_failure(msg, failed.failure, now)
        note = f"not accepted for: {'; '.join(refused)}" if refused else None
        logger.info("mail %s sent to %d recipient(s)", msg.id, len(recipients) - len(refused))
        return msg.model_copy(
            update={
                "status": "sent",
                "sent_at": now,
                "attempts": msg.attempts + 1,
                "last_error": self.redactor.redact_text(note) if note else None,
            }
        )

    def _after_failure(self, msg: Message, failure: SendFailure, now: datetime) -> Message:
        attempts = msg.attempts + 1
        give_up = failure.permanent or (not failure.outage and attempts >= self.max_attempts)
        error = self.redactor.redact_text(failure.text)
        if give_up:
            why = "permanent error" if failure.permanent else f"{attempts} attempts"
            logger.warning("mail %s failed (%s): %s", msg.id, why, error)
            error = f"{error} (gave up: {why})"
            return msg.model_copy(
                update={"status": "failed", "attempts": attempts, "last_error": error}
            )
        delay = retry_delay(attempts, self.base_delay_s, self.max_delay_s, rng=self._rng)
        logger.info("mail %s deferred %.1f s: %s", msg.id, delay, error)
        return msg.model_copy(
            update={
                "attempts": attempts,
                "next_attempt_at": now + timedelta(seconds=delay),
                "last_error": error,
            }
        )

    # --- run -----------------------------------------------------------------------------

    async def run(self, poll_s: float = 1.0) -> None:
        """Flush forever: after each flush sleep until the next message is due (at most
        `poll_s`), or until wake(). Errors are logged and retried; cancel to stop."""
        while True:
            self._wake = anyio.Event()
            try:
                report = await self.flush()
                delay = poll_s if report.busy else await self._next_delay(poll_s)
                duties.beat()
            except Exception:
                logger.exception("mail outbox flush failed; retrying in %.1f s", poll_s)
                delay = poll_s
            with anyio.move_on_after(delay):
                await self._wake.wait()

    async def _next_delay(self, poll_s: float) -> float:
        if not self.configured:
            return poll_s
        return await next_due_delay(self.store, self.clock(), poll_s)


async def next_due_delay(
    store: Store, now: datetime, poll_s: float, direction: str = "out"
) -> float:
    """Seconds until the next queued message of `direction` is due, at most `poll_s` (the
    mail and webhook outboxes sleep this long between flushes)."""
    soon = await store.due_messages(now + timedelta(seconds=poll_s), limit=1, direction=direction)
    if not soon:
        return poll_s
    return min(poll_s, max(0.0, (soon[0].next_attempt_at - now).total_seconds()))


def _auto_key(to: list[str], subject: str, text: str, incident_id: int | None) -> str:
    material = "\x1f".join([",".join(sorted(to)), subject, text, str(incident_id)])
    return "mail-" + hashlib.sha256(material.encode("utf-8")).hexdigest()
