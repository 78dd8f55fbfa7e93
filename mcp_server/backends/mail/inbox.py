"""Watch an IMAP mailbox for replies and hand each one over exactly once (aioimaplib).

`ImapWatcher.run()` logs in, processes every message not yet handled, then waits with IDLE
when the server offers it (Dovecot does) or polls every `poll_s`, and reconnects with
exponential backoff (0.5 s doubling to 30 s) whenever the connection drops.

Exactly once, in this order per message:

1. ``UID FETCH (BODY.PEEK[])``: reading does not mark it \\Seen;
2. skip it when its Message-ID (`mail_parse.message_key`) is already recorded in the store
   as an incoming message (a crash between commit and flag left it unflagged);
3. ``await on_message(uid, raw)``: the caller's store commit. If it raises, the message stays
   unflagged and is tried again on the next pass;
4. record ``Message(id=<Message-ID>, direction="in", status="processed")`` in the store
   (a no-op when on_message already stored a message under that id, which is the way to make
   the commit and the dedupe record a single write);
5. only then ``UID STORE +FLAGS ($OpsMedicDone \\Seen)``; flagged mail is never fetched again.

The search is ``UNKEYWORD $OpsMedicDone``, not ``UNSEEN``: a person opening the mailbox
first must not hide a reply. Servers that refuse custom keywords fall back to ``UNSEEN``.
Run one watcher per mailbox (take a store lease when several OpsMedic processes share one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import aioimaplib

from mcp_server.backends.mail.parse import inbound_record, message_key
from mcp_server.core import duties
from mcp_server.errors import ConfigError, Unavailable
from mcp_server.settings import ImapSettings
from mcp_server.store.base import Store

logger = logging.getLogger(__name__)
T = TypeVar("T")
OnMessage = Callable[[int, bytes], Awaitable[None]]
DONE_KEYWORD = "$OpsMedicDone"
FIRST = asyncio.FIRST_COMPLETED
MAX_IDLE_S = 29 * 60.0  # RFC 2177: servers may drop an IDLE after 30 minutes
_FETCH_LINE_RE = re.compile(rb"\bFETCH \(")
_UID_RE = re.compile(rb"\bUID (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")


class _Session:
    """One logged-in connection; every call fails fast once the socket is gone."""

    def __init__(self, client: aioimaplib.IMAP4, lost: asyncio.Event, timeout_s: float) -> None:
        self.client = client
        self.lost = lost
        self.timeout_s = timeout_s
        self.keywords = True  # PERMANENTFLAGS has \* (custom keywords allowed)

    async def call(self, awaitable: Awaitable[T], what: str, timeout_s: float | None = None) -> T:
        """Await an aioimaplib call; Unavailable on error, timeout, or a dropped connection."""
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost},
                timeout=timeout_s or self.timeout_s,
                return_when=FIRST,
            )
        finally:
            lost.cancel()
        if task not in done:
            task.cancel()
            why = "connection lost" if lost in done else "timed out"
            raise Unavailable(f"IMAP {what}: {why}; reconnecting")
        try:
            return task.result()
        except (TimeoutError, aioimaplib.AioImapException, OSError, ValueError) as exc:
            raise Unavailable(f"IMAP {what} failed: {exc or type(exc).__name__}") from exc

    async def ok(self, awaitable: Awaitable[Any], what: str) -> Any:
        """Like call(), and the server must answer OK."""
        response = await self.call(awaitable, what)
        if response.result != "OK":
            said = b" ".join(bytes(line) for line in response.lines[-1:]).decode(errors="replace")
            raise Unavailable(f"IMAP {what} refused by the server: {response.result} {said}")
        return response


class ImapWatcher:
    """Hand every reply in ``settings.mailbox`` to ``on_message(uid, raw)`` exactly once.

    Counters: ``processed`` (on_message succeeded), ``skipped_duplicate`` (Message-ID already
    recorded), ``failed`` (on_message raised; retried later), ``reconnects``. ``mode`` is
    ``idle``, ``poll`` or ``disconnected``. ``ssl_context`` overrides the system trust store
    for tls/starttls; ``idle=False`` forces polling.
    """

    def __init__(
        self,
        settings: ImapSettings,
        on_message: OnMessage,
        store: Store,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle: bool = True,
        timeout_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        missing = [k for k in ("host", "username", "password") if not getattr(settings, k)]
        if missing:
            keys = ", ".join(f"OPSMEDIC_IMAP__{k.upper()}" for k in missing)
            raise ConfigError(f"IMAP watcher needs {keys}; set them to read replies")
        self.settings = settings
        self.on_message = on_message
        self.store = store
        self.ssl_context = ssl_context
        self.use_idle = idle
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.processed = 0
        self.skipped_duplicate = 0
        self.failed = 0
        self.reconnects = 0
        self.mode: Literal["idle", "poll", "disconnected"] = "disconnected"
        self._session: _Session | None = None
        self._connected_before = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._running = False
        self._waiters: list[asyncio.Future[int]] = []
        self._backoff = backoff_initial_s

    # --- connection -------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    async def _connect(self) -> _Session:
        s = self.settings
        lost = asyncio.Event()
        tls = self._tls_context() if s.tls == "tls" else None
        client = aioimaplib.IMAP4(
            host=s.host or "",
            port=s.port,
            timeout=self.timeout_s,
            conn_lost_cb=lambda _exc: lost.set(),
            ssl_context=tls,
        )
        session = _Session(client, lost, self.timeout_s)
        try:
            await session.call(client.wait_hello_from_server(), f"connect to {s.host}:{s.port}")
            if s.tls == "starttls":
                await self._starttls(session)
            await self._login(session)
        except BaseException:
            _abort(session)
            raise
        return session

    async def _starttls(self, session: _Session) -> None:
        client, host = session.client, self.settings.host or ""
        if not client.has_capability("STARTTLS"):
            raise Unavailable(
                f"IMAP server {host} does not offer STARTTLS; set OPSMEDIC_IMAP__TLS=tls "
                "(usually port 993) or none"
            )
        proto = client.protocol
        command = aioimaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)
        await session.ok(proto.execute(command), "STARTTLS")
        loop = asyncio.get_running_loop()
        upgrade = loop.start_tls(proto.transport, proto, self._tls_context(), server_hostname=host)
        proto.transport = await session.call(upgrade, "TLS handshake")
        await session.call(proto.capability(), "CAPABILITY")  # forget what was said in clear

    async def _login(self, session: _Session) -> None:
        s = self.settings
        password = s.password.get_secret_value() if s.password else ""
        response = await session.call(session.client.login(s.username or "", password), "login")
        if response.result != "OK":
            raise Unavailable(
                f"IMAP login as {s.username} was refused; check OPSMEDIC_IMAP__USERNAME and "
                "OPSMEDIC_IMAP__PASSWORD"
            )
        selected = await session.ok(session.client.select(s.mailbox), f"SELECT {s.mailbox}")
        flags = b" ".join(bytes(x) for x in selected.lines if b"PERMANENTFLAGS" in x)
        session.keywords = not flags or b"\\*" in flags
        if not session.keywords:
            logger.warning("IMAP %s refuses custom keywords; tracking replies by \\Seen", s.host)

    async def _ensure_session(self) -> _Session:
        if self._session is None or self._session.lost.is_set():
            await self._drop_session()
            self._session = await self._connect()
            if self._connected_before:
                self.reconnects += 1
            self._connected_before = True
        return self._session

    async def _drop_session(self, logout: bool = False) -> None:
        session, self._session = self._session, None
        self.mode = "disconnected"
        if session is None:
            return
        if logout and not session.lost.is_set():
            with contextlib.suppress(Unavailable):
                await session.call(session.client.logout(), "LOGOUT", timeout_s=2.0)
        _abort(session)

    # --- one pass ---------------------------------------------------------------------

    async def _pass(self, session: _Session) -> int:
        """Handle every message not flagged yet; return how many went to on_message."""
        # servers sync a session's view of the mailbox between commands, so a SEARCH alone
        # may not see mail delivered since the last one: NOOP first makes it current
        await session.ok(session.client.noop(), "NOOP")
        criteria = ("UNKEYWORD", DONE_KEYWORD) if session.keywords else ("UNSEEN",)
        found = await session.ok(session.client.uid_search(*criteria), "SEARCH")
        uids = [int(x) for line in found.lines[:-1] for x in bytes(line).split() if x.isdigit()]
        handled = 0
        for uid in sorted(uids):
            handled += await self._handle(session, uid)
        return handled

    async def _handle(self, session: _Session, uid: int) -> int:
        fetched = await session.ok(
            session.client.uid("fetch", str(uid), "(UID FLAGS BODY.PEEK[])"), f"FETCH {uid}"
        )
        raw, flags = _literal_of(fetched.lines, uid)
        if raw is None or DONE_KEYWORD.lower().encode() in flags.lower():
            return 0  # expunged meanwhile, or another watcher got there first
        key = message_key(raw)
        if await self.store.get_message(key) is not None:
            self.skipped_duplicate += 1
            logger.info("IMAP uid %s (%s) was handled before; flagging it only", uid, key)
            await self._mark_done(session, uid)
            return 0
        try:
            await self.on_message(uid, raw)
        except Exception:  # the handler's failure must not stop the others; retried later
            self.failed += 1
            logger.exception("handling IMAP uid %s (%s) failed; will retry", uid, key)
            return 0
        await self.store.enqueue_message(inbound_record(key, uid, raw))
        self.processed += 1
        await self._mark_done(session, uid)
        return 1

    async def _mark_done(self, session: _Session, uid: int) -> None:
        flags = f"({DONE_KEYWORD} \\Seen)" if session.keywords else "(\\Seen)"
        await session.ok(
            session.client.uid("store", str(uid), "+FLAGS.SILENT", flags), f"STORE {uid}"
        )

    async def check_once(self) -> int:
        """One pass now; return how many messages went to on_message.

        While run() is active this asks its loop for a pass and waits for it. Raises
        Unavailable when the server cannot be reached or the connection drops mid-pass.
        """
        if self._running:
            waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake.set()
            return await waiter
        async with self._lock:
            try:
                session = await self._ensure_session()
                return await self._pass(session)
            except Unavailable:
                await self._drop_session()
                raise

    # --- forever ----------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until close(): pass, IDLE or poll, pass again; reconnect with backoff."""
        self._running = True
        try:
            while not self._closing:
                try:
                    await self._serve(await self._ensure_session())
                except Unavailable as exc:
                    logger.warning("IMAP watcher: %s (retry in %.1f s)", exc, self._backoff)
                    where = f"{self.settings.host}:{self.settings.port}"
                    duties.waiting(f"IMAP {where} unreachable (retry in {self._backoff:.0f} s)")
                except Exception:  # the watcher's top-level loop: log, back off, go on
                    logger.exception("IMAP watcher failed (retry in %.1f s)", self._backoff)
                await self._drop_session()
                if not self._closing:
                    await self._pause(self._backoff)
                    self._backoff = min(self._backoff * 2, self.backoff_max_s)
        finally:
            self._running = False
            await self._drop_session(logout=True)

    async def _serve(self, session: _Session) -> None:
        while not self._closing:
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            try:
                handled = await self._pass(session)
            except BaseException:
                self._waiters[:0] = waiters  # answered by the pass after the reconnect
                raise
            self._backoff = self.backoff_initial_s  # a whole pass worked: the link is good
            duties.beat()  # and again when IDLE starts; so the duty's interval covers poll_s
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(handled)
            if self._closing or self._wake.is_set():
                continue
            if self.use_idle and session.client.has_capability("IDLE"):
                self.mode = "idle"
                await self._idle(session)
            else:
                self.mode = "poll"
                await self._wait_any(session, None, self.settings.poll_s)

    async def _idle(self, session: _Session) -> None:
        """IDLE until the server reports a change, poll_s passes, or check_once/close wakes us."""
        client, idle_s = session.client, min(self.settings.poll_s, MAX_IDLE_S)
        idle = await session.call(client.idle_start(timeout=idle_s), "IDLE")
        duties.beat()
        push = asyncio.ensure_future(client.wait_server_push(timeout=idle_s + 5))
        try:
            await self._wait_any(session, push, idle_s + 10)
        finally:
            push.cancel()
            if push.done() and not push.cancelled():
                push.exception()  # a push timeout is expected; mark it seen
        if client.has_pending_idle():
            client.idle_done()
        await session.call(idle, "IDLE DONE")
        queue = client.protocol.idle_queue
        while not queue.empty():  # the pass that follows covers every queued push
            queue.get_nowait()

    async def _wait_any(
        self, session: _Session, event: asyncio.Future[Any] | None, timeout_s: float
    ) -> None:
        """Wait for ``event``, a wake-up or timeout_s; Unavailable if the connection drops."""
        wake = asyncio.ensure_future(self._wake.wait())
        lost = asyncio.ensure_future(session.lost.wait())
        waits: set[asyncio.Future[Any]] = {wake, lost} | ({event} if event else set())
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=FIRST)
        finally:
            wake.cancel()
            lost.cancel()
        if session.lost.is_set():
            raise Unavailable("IMAP connection lost while waiting; reconnecting")

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self._wake.clear()

    async def close(self) -> None:
        """Stop run() (it logs out and returns) or log out of check_once's connection."""
        self._closing = True
        self._wake.set()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable("IMAP watcher closed"))
        self._waiters.clear()
        if not self._running:
            async with self._lock:
                await self._drop_session(logout=True)


# --- helpers --------------------------------------------------------------------------


def _abort(session: _Session) -> None:
    connecting = getattr(session.client, "_client_task", None)
    if connecting is not None and not connecting.done():
        connecting.cancel()
    transport = getattr(session.client.protocol, "transport", None)
    if transport is not None:
        transport.abort()


def _literal_of(lines: list[Any], uid: int) -> tuple[bytes | None, bytes]:
    """The message bytes and FLAGS of ``uid`` in a UID FETCH response (others ignored)."""
    current: int | None = None
    flags = b""
    raw: bytes | None = None
    for line in lines:
        if isinstance(line, bytearray):
            if current == uid and raw is None:
                raw = bytes(line)
            continue
        if _FETCH_LINE_RE.search(line):
            found = _UID_RE.search(line)
            current = int(found.group(1)) if found else None
        got = _FLAGS_RE.search(line)
        if got and current == uid:
            flags = got.group(1)
    return raw, flags
