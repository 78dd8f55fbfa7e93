"""ImapWatcher against a real Dovecot, with a real TCP proxy in between to cut connections.

Replies are APPENDed as a mail client would deliver them (quoting the original, with
In-Reply-To/References). `ImapProxy` (tests/integration/_imap_proxy.py) forwards traffic to
Dovecot byte for byte and cuts the connection at an exact point (mid-FETCH literal, at a
STORE), ends TLS in front of Dovecot or speaks STARTTLS: every failure is a real socket one.
No timing is asserted; IDLE is shown by poll_s=600 s with a much shorter deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from mcp_server.backends.mail.inbox import DONE_KEYWORD, ImapWatcher
from mcp_server.backends.mail.parse import message_key, parse_reply
from mcp_server.errors import ConfigError, Unavailable
from mcp_server.models import Message
from mcp_server.safety.approvals import (
    ApprovalDesk,
    ApprovalTokens,
    DecisionOutcome,
    action_hash,
    reply_to_address,
)
from mcp_server.settings import ImapSettings
from mcp_server.store.sqlite import SqliteStore
from tests.helpers import tls_pair
from tests.integration._imap_proxy import Cut, ImapProxy
from tests.services import ImapAccess

USER = "ops@example.test"
APPROVER = "approver@example.test"


def reply(n: int, decision: str = "Approve", pad: int = 0, to: str | None = None) -> bytes:
    """A reply as Thunderbird would write it to an OpsMedic approval request."""
    text = (
        f"From: Alice <{APPROVER}>\r\nTo: {to or 'ops+' + 'a' * 48 + '@example.test'}\r\n"
        f"Subject: Re: [OPSMEDIC-{n}] [CRITICAL] container:web died\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mail.example.test>\r\n"
        f"In-Reply-To: <opsmedic-{n}-1@opsmedic.test>\r\n"
        f"References: <opsmedic-incident-{n}@opsmedic.test> <opsmedic-{n}-1@opsmedic.test>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{decision}\r\n\r\nOn 02.03.26 10:00, OpsMedic wrote:\r\n"
        "> OpsMedic wants to restart container:web.\r\n> Reply APPROVE or DENY.\r\n"
    )
    return text.encode() + b"> " + b"x" * pad + b"\r\n"


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def flags_by_uid(imap: ImapAccess) -> dict[int, str]:
    with imap.session(USER) as conn:
        _, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
    found = {}
    for item in data:
        if isinstance(item, bytes) and b"UID" in item:
            words = item.decode().replace("(", " ").replace(")", " ").split()
            found[int(words[words.index("UID") + 1])] = item.decode()
    return found


# --- fixtures -----------------------------------------------------------------------------


class Handler:
    """The caller's on_message: records what it got (the real one commits to the store)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []
        self.fail_next = 0

    async def __call__(self, uid: int, raw: bytes) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("handler failed (injected)")
        self.seen.append((uid, message_key(raw)))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(f"sqlite:///{tmp_path}/mail.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def proxy(imap_server: ImapAccess) -> AsyncIterator[ImapProxy]:
    """An ImapProxy to Dovecot, not yet listening; stopped after the test."""
    made = ImapProxy(imap_server)
    yield made
    await made.stop()


Make = Callable[..., ImapWatcher]


@pytest.fixture
async def make(store: SqliteStore, imap_server: ImapAccess) -> AsyncIterator[Make]:
    made: list[ImapWatcher] = []
    tasks: list[asyncio.Task[None]] = []

    def factory(port: int | None = None, **kwargs: Any) -> ImapWatcher:
        fields = {"tls", "poll_s", "password"}
        settings = ImapSettings(
            host="127.0.0.1",
            port=port or imap_server.port,
            username=USER,
            password=SecretStr(kwargs.pop("password", "secret")),
            **{k: kwargs.pop(k) for k in list(kwargs) if k in fields},
        )
        handler = kwargs.pop("handler", None) or Handler()
        watcher = ImapWatcher(settings, handler, store, **kwargs)
        watcher.handler = handler  # type: ignore[attr-defined]
        made.append(watcher)
        return watcher

    factory.tasks = tasks  # type: ignore[attr-defined]
    yield factory
    for watcher in made:
        await watcher.close()
    for task in tasks:
        await asyncio.wait_for(task, 10)


def start(make: Make, watcher: ImapWatcher) -> asyncio.Task[None]:
    task = asyncio.create_task(watcher.run())
    make.tasks.append(task)  # type: ignore[attr-defined]
    return task


async def deliver(imap: ImapAccess, *raws: bytes) -> list[str]:
    for raw in raws:
        await asyncio.to_thread(imap.append, USER, raw)
    return [message_key(raw) for raw in raws]


def handled(watcher: ImapWatcher) -> list[str]:
    return [key for _, key in watcher.handler.seen]  # type: ignore[attr-defined]


# --- one pass -----------------------------------------------------------------------------


async def test_each_reply_is_processed_once_and_flagged(
    make: Make, imap_server: ImapAccess, store: SqliteStore
) -> None:
    keys = await deliver(imap_server, reply(1), reply(2, "Deny"), reply(3))
    watcher = make()
    assert await watcher.check_once() == 3
    assert handled(watcher) == keys
    flags = flags_by_uid(imap_server)
    assert len(flags) == 3
    assert all(DONE_KEYWORD in f and "\\Seen" in f for f in flags.values())
    for key in keys:
        record = await store.get_message(key)
        assert record is not None and record.direction == "in" and record.status == "processed"
    assert await watcher.check_once() == 0
    assert (watcher.processed, watcher.skipped_duplicate, watcher.failed) == (3, 0, 0)


async def test_fetched_bytes_are_the_delivered_reply(make: Make, imap_server: ImapAccess) -> None:
    got: list[bytes] = []

    async def keep(uid: int, raw: bytes) -> None:
        got.append(raw)

    await deliver(imap_server, reply(42, "Denied, DB maintenance", pad=20000))
    assert await make(handler=keep).check_once() == 1
    parsed = parse_reply(got[0])
    assert (parsed.decision, parsed.incident_id) == ("deny", 42)
    assert parsed.in_reply_to == "<opsmedic-42-1@opsmedic.test>"


async def test_recorded_message_id_is_flagged_not_reprocessed(
    make: Make, imap_server: ImapAccess, store: SqliteStore
) -> None:
    (key,) = await deliver(imap_server, reply(5))
    await store.enqueue_message(Message(id=key, direction="in", status="processed"))
    watcher = make()
    assert await watcher.check_once() == 0
    assert handled(watcher) == [] and watcher.skipped_duplicate == 1
    assert DONE_KEYWORD in next(iter(flags_by_uid(imap_server).values()))


async def test_failed_handler_leaves_it_unflagged_for_the_next_pass(
    make: Make, imap_server: ImapAccess
) -> None:
    (key,) = await deliver(imap_server, reply(6))
    watcher = make()
    watcher.handler.fail_next = 1  # type: ignore[attr-defined]
    assert await watcher.check_once() == 0 and watcher.failed == 1
    assert DONE_KEYWORD not in next(iter(flags_by_uid(imap_server).values()))
    assert await watcher.check_once() == 1 and handled(watcher) == [key]


async def test_a_reply_a_person_already_read_is_still_processed(
    make: Make, imap_server: ImapAccess
) -> None:
    with imap_server.session(USER) as conn:
        conn.append("INBOX", "(\\Seen)", None, reply(7))
    assert await make().check_once() == 1


async def test_wrong_password_and_missing_config(make: Make, proxy: ImapProxy) -> None:
    proxy.source = "127.0.0.9"  # keep Dovecot's failed-login penalty away from other tests
    await proxy.start()
    with pytest.raises(Unavailable, match="OPSMEDIC_IMAP__PASSWORD"):
        await make(port=proxy.port, password="wrong").check_once()
    with pytest.raises(ConfigError, match="OPSMEDIC_IMAP__HOST"):
        ImapWatcher(ImapSettings(username=USER), Handler(), None)  # type: ignore[arg-type]


async def test_server_down_is_unavailable(
    make: Make, proxy: ImapProxy, imap_server: ImapAccess
) -> None:
    await proxy.start()
    await proxy.stop()
    with pytest.raises(Unavailable, match="connect"):
        await make(port=proxy.port).check_once()


# --- forever: IDLE, polling, reconnects ---------------------------------------------------


async def test_idle_wakes_the_watcher_on_append(make: Make, imap_server: ImapAccess) -> None:
    watcher = make(poll_s=600.0)  # only IDLE can notice the mail within the deadline
    start(make, watcher)
    await eventually(lambda: watcher.mode == "idle")
    keys = await deliver(imap_server, reply(8))
    await eventually(lambda: handled(watcher) == keys)
    assert watcher.mode in ("idle", "disconnected") and watcher.reconnects == 0


async def test_polling_when_idle_is_off(make: Make, imap_server: ImapAccess) -> None:
    watcher = make(poll_s=0.2, idle=False)
    start(make, watcher)
    await eventually(lambda: watcher.mode == "poll")
    keys = await deliver(imap_server, reply(9), reply(10))
    await eventually(lambda: handled(watcher) == keys)


async def test_check_once_while_running_asks_the_loop(make: Make, imap_server: ImapAccess) -> None:
    watcher = make(poll_s=600.0, idle=False)
    start(make, watcher)
    await eventually(lambda: watcher.mode == "poll")
    keys = await deliver(imap_server, reply(11))
    assert await asyncio.wait_for(watcher.check_once(), 10) == 1
    assert handled(watcher) == keys


async def test_check_once_is_answered_after_a_drop_in_its_pass(
    make: Make, proxy: ImapProxy, imap_server: ImapAccess
) -> None:
    proxy.from_client = Cut(b"UID SEARCH", occurrence=2)  # the pass check_once asks for
    await proxy.start()
    watcher = make(port=proxy.port, poll_s=600.0, idle=False)
    start(make, watcher)
    await eventually(lambda: watcher.mode == "poll")
    keys = await deliver(imap_server, reply(12))
    assert await asyncio.wait_for(watcher.check_once(), 15) == 1
    assert handled(watcher) == keys and proxy.cuts == 1 and watcher.reconnects == 1


async def test_connection_cut_mid_fetch_reconnects_and_processes_each_once(
    make: Make, proxy: ImapProxy, imap_server: ImapAccess
) -> None:
    keys = await deliver(imap_server, *(reply(20 + i, pad=30000) for i in range(3)))
    proxy.from_server = Cut(b"BODY[] {", after=5000, occurrence=2)  # inside message 2
    await proxy.start()
    watcher = make(port=proxy.port, poll_s=600.0)
    start(make, watcher)
    await eventually(lambda: sorted(handled(watcher)) == sorted(keys))
    assert proxy.cuts == 1 and proxy.connections >= 2 and watcher.reconnects >= 1
    await eventually(lambda: all(DONE_KEYWORD in f for f in flags_by_uid(imap_server).values()))
    assert handled(watcher) == keys  # each exactly once, in order


async def test_cut_between_commit_and_flag_never_processes_twice(
    make: Make, proxy: ImapProxy, imap_server: ImapAccess
) -> None:
    keys = await deliver(imap_server, reply(30), reply(31))
    proxy.from_client = Cut(b"UID STORE")  # the first flag never reaches Dovecot
    await proxy.start()
    watcher = make(port=proxy.port, poll_s=600.0)
    start(make, watcher)
    await eventually(lambda: len(flags_by_uid(imap_server)) == 2 and watcher.processed == 2)
    await eventually(lambda: all(DONE_KEYWORD in f for f in flags_by_uid(imap_server).values()))
    assert proxy.cuts == 1 and watcher.reconnects >= 1
    assert handled(watcher) == keys and watcher.skipped_duplicate == 1


async def test_reconnects_with_backoff_after_the_server_comes_back(
    make: Make, proxy: ImapProxy, imap_server: ImapAccess
) -> None:
    await proxy.start()
    await proxy.stop()  # the port is known, nobody listens
    watcher = make(port=proxy.port, poll_s=600.0)
    start(make, watcher)
    await eventually(lambda: watcher._backoff >= 1.0)  # 0.5 s, then doubled
    keys = await deliver(imap_server, reply(40))
    await proxy.start()
    await eventually(lambda: handled(watcher) == keys)
    await eventually(lambda: watcher._backoff == 0.5)  # a good pass resets it


# --- TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tls", "starttls"])
async def test_tls_modes(
    make: Make, proxy: ImapProxy, imap_server: ImapAccess, tmp_path: Path, mode: str
) -> None:
    server_ctx, client_ctx = tls_pair(tmp_path)
    proxy.tls = server_ctx
    proxy.starttls = mode == "starttls"
    await proxy.start()
    keys = await deliver(imap_server, reply(50))
    watcher = make(port=proxy.port, tls=mode, ssl_context=client_ctx)
    assert await watcher.check_once() == 1 and handled(watcher) == keys
    untrusted = make(port=proxy.port, tls=mode)  # system trust store: self-signed refused
    with pytest.raises(Unavailable):
        await untrusted.check_once()


async def test_starttls_not_offered(make: Make) -> None:
    with pytest.raises(Unavailable, match="does not offer STARTTLS"):
        await make(tls="starttls").check_once()


# --- the pieces together ------------------------------------------------------------------


async def test_approval_reply_through_dovecot_is_decided_once(
    make: Make, imap_server: ImapAccess, store: SqliteStore
) -> None:
    desk = ApprovalDesk(store, ApprovalTokens(b"integration-secret-0123"), [APPROVER])
    token, approval = await desk.request(77, "restart", {}, "container:web", APPROVER)
    reply_to = reply_to_address(USER, token)
    outcomes: list[DecisionOutcome] = []

    async def on_message(uid: int, raw: bytes) -> None:
        parsed = parse_reply(raw)
        assert parsed.token and parsed.decision
        current = action_hash("restart", {}, "container:web")
        outcomes.append(
            await desk.decide(parsed.token, parsed.decision, parsed.from_addr, current, 77)
        )

    replies = [reply(77, "Yes, approve", to=reply_to.upper()), reply(77, "deny", to=reply_to)]
    await deliver(imap_server, *replies)  # the second replays the token
    assert await make(handler=on_message).check_once() == 2
    assert [(o.status, o.reason) for o in outcomes] == [("approved", None), ("rejected", "reused")]
    stored = await store.get_approval(approval.id)
    assert stored is not None and stored.status == "approved" and stored.via == "email"
