"""Approval tokens (pure, time passed in) and the desk on a real SQLite store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mcp_server.backends.mail import parse as mail_parse
from mcp_server.errors import InvalidInput
from mcp_server.safety import approval_tokens
from mcp_server.safety.approvals import (
    ApprovalDesk,
    ApprovalTokens,
    action_hash,
    reply_to_address,
    token_from_address,
    token_message_id,
)
from mcp_server.store.sqlite import SqliteStore
from tests.helpers import ManualClock

SECRET = b"0123456789abcdef-test-secret"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE = "alice@example.test"
BOB = "bob@example.test"
HASH = action_hash("restart", {"reason": "died"}, "container:web")


def issue(incident: int | None = 42, approver: str = ALICE, ttl_s: float = 1800) -> str:
    return ApprovalTokens(SECRET).issue(incident, HASH, approver, ttl_s, now=T0)[0]


def flip(token: str, index: int) -> str:
    swapped = "b" if token[index] == "a" else "a"
    return token[:index] + swapped + token[index + 1 :]


# --- action hash --------------------------------------------------------------------------


def test_action_hash_is_canonical_and_exact() -> None:
    same = action_hash("restart", {"b": 1, "a": [1, 2]}, "container:web")
    assert same == action_hash("restart", {"a": [1, 2], "b": 1}, "container:web")
    assert len(same) == 64
    assert same != action_hash("restart", {"a": [1, 2], "b": 2}, "container:web")
    assert same != action_hash("restart", {"a": [1, 2], "b": 1}, "container:api")
    assert same != action_hash("clean_disk", {"a": [1, 2], "b": 1}, "container:web")


# --- tokens -------------------------------------------------------------------------------


def test_token_roundtrip_and_shape() -> None:
    tokens = ApprovalTokens(SECRET)
    token, approval = tokens.issue(42, HASH, "Alice <ALICE@Example.test>", now=T0)
    assert len(token) == approval_tokens.TOKEN_CHARS == 48
    assert token == token.lower() and "=" not in token
    assert approval.id == token[:16]  # the nonce leads the token
    assert approval.approver == ALICE and approval.incident_id == 42
    assert approval.expires_at == T0 + timedelta(minutes=30)
    verdict = tokens.verify(token, 42, HASH, ALICE, T0 + timedelta(minutes=29))
    assert verdict.ok and verdict.reason is None
    assert verdict.approval_id == approval.id and verdict.incident_id == 42


def test_tokens_are_unique() -> None:
    assert len({issue() for _ in range(200)}) == 200


@pytest.mark.parametrize("change", [str.upper, str.title, lambda t: t[:20].upper() + t[20:]])
def test_case_changed_token_still_verifies(change: object) -> None:
    token = issue()
    changed = change(token)  # type: ignore[operator]
    assert changed != token
    assert ApprovalTokens(SECRET).verify(changed, 42, HASH, "ALICE@EXAMPLE.TEST", T0).ok


@pytest.mark.parametrize("index", [0, 12, 17, 24, 30, 47])  # nonce, expiry, incident, tag
def test_any_altered_character_is_bad_mac(index: int) -> None:
    verdict = ApprovalTokens(SECRET).verify(flip(issue(), index), 42, HASH, ALICE, T0)
    assert not verdict.ok and verdict.reason == "bad_mac"  # incident too: it is under the MAC


def test_other_secret_is_bad_mac() -> None:
    verdict = ApprovalTokens(b"another-secret-of-16+").verify(issue(), 42, HASH, ALICE, T0)
    assert verdict.reason == "bad_mac"


@pytest.mark.parametrize(
    "token", ["", "abc", "8" * 48, issue()[:-1], issue() + "a", issue()[:47] + "!"]
)
def test_malformed(token: str) -> None:
    assert ApprovalTokens(SECRET).verify(token, 42, HASH, ALICE, T0).reason == "malformed"


def test_expired_at_and_after_expiry() -> None:
    tokens, token = ApprovalTokens(SECRET), issue(ttl_s=60)
    assert tokens.verify(token, 42, HASH, ALICE, T0 + timedelta(seconds=59)).ok
    assert tokens.verify(token, 42, HASH, ALICE, T0 + timedelta(seconds=60)).reason == "expired"


def test_wrong_incident_is_not_forgery() -> None:
    tokens = ApprovalTokens(SECRET)
    assert tokens.verify(issue(42), 43, HASH, ALICE, T0).reason == "wrong_incident"
    assert tokens.verify(issue(None), 43, HASH, ALICE, T0).reason == "wrong_incident"
    assert tokens.verify(issue(None), None, HASH, ALICE, T0).ok


def test_action_changed_needs_the_stored_hash_to_tell_it_from_forgery() -> None:
    tokens, token = ApprovalTokens(SECRET), issue()
    other = action_hash("restart", {"reason": "died"}, "container:api")
    assert tokens.verify(token, 42, other, ALICE, T0).reason == "bad_mac"
    told = tokens.verify(token, 42, other, ALICE, T0, issued_action_hash=HASH)
    assert told.reason == "action_changed"


def test_not_approver_needs_the_issued_approver() -> None:
    tokens, token = ApprovalTokens(SECRET), issue()
    assert tokens.verify(token, 42, HASH, BOB, T0).reason == "bad_mac"
    assert tokens.verify(token, 42, HASH, BOB, T0, issued_to=ALICE).reason == "not_approver"


def test_short_secret_and_bad_approver_are_refused() -> None:
    with pytest.raises(InvalidInput, match="OPSMEDIC_SECRET"):
        ApprovalTokens(b"short")
    with pytest.raises(InvalidInput, match="email address"):
        ApprovalTokens(SECRET).issue(1, HASH, "not an address", now=T0)


# --- where tokens travel ------------------------------------------------------------------


def test_plus_address_roundtrip_survives_case() -> None:
    token = issue()
    addr = reply_to_address("OpsMedic <ops+old@Example.test>", token)
    assert addr == f"ops+{token}@example.test"
    assert len(addr.split("@")[0]) <= 64
    assert token_from_address(addr.upper()) == token
    assert token_from_address(f"Ops <{addr.upper()}>") == token
    assert token_from_address("ops+notatoken@example.test") is None
    assert token_from_address("ops@example.test") is None


def test_reply_address_refuses_a_local_part_over_64() -> None:
    with pytest.raises(InvalidInput, match="shorter address"):
        reply_to_address("a-very-long-mailbox-name@example.test", issue())


def test_mail_parse_agrees_on_token_shape_and_message_id() -> None:
    assert mail_parse.TOKEN_MSGID_PREFIX == approval_tokens.TOKEN_MSGID_PREFIX
    assert f"[a-z2-7]{{{approval_tokens.TOKEN_CHARS}}}" == mail_parse.TOKEN_PATTERN
    token = issue()
    raw = (
        "From: alice@example.test\r\nTo: ops@example.test\r\nSubject: Re: x\r\n"
        f"References: <a@b> {token_message_id(token, 'opsmedic.test').upper()}\r\n\r\nok\r\n"
    ).encode()
    parsed = mail_parse.parse_reply(raw)
    assert (parsed.token, parsed.token_source) == (token, "references")


# --- the desk on a real store -------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def desk(store: SqliteStore, clock: ManualClock) -> ApprovalDesk:
    return ApprovalDesk(store, ApprovalTokens(SECRET), [ALICE, f"Bob <{BOB.upper()}>"], clock)


async def request(desk: ApprovalDesk, approver: str = ALICE) -> str:
    token, _ = await desk.request(42, "restart", {"reason": "died"}, "container:web", approver)
    return token


async def test_approve_once_then_reused(desk: ApprovalDesk, store: SqliteStore) -> None:
    token = await request(desk)
    first = await desk.decide(token.upper(), "approve", f"Alice <{ALICE.upper()}>", HASH, 42)
    assert first.status == "approved" and first.ok
    assert first.approval is not None and first.approval.status == "approved"
    assert first.approval.via == "email" and first.approval.decided_at is not None
    again = await desk.decide(token, "deny", ALICE, HASH, 42)
    assert (again.status, again.reason) == ("rejected", "reused")
    stored = await store.get_approval(token[:16])
    assert stored is not None and stored.status == "approved"


async def test_deny(desk: ApprovalDesk) -> None:
    outcome = await desk.decide(await request(desk), "Denied", ALICE, HASH, 42)
    assert outcome.status == "denied" and outcome.message == f"denied by {ALICE}"


async def test_concurrent_decisions_only_one_wins(desk: ApprovalDesk) -> None:
    token = await request(desk)
    results = await asyncio.gather(
        *(desk.decide(token, "approve", ALICE, HASH, 42) for _ in range(5))
    )
    assert sorted(r.status for r in results) == ["approved"] + ["rejected"] * 4
    assert {r.reason for r in results if not r.ok} == {"reused"}


async def test_expired_is_marked(
    desk: ApprovalDesk, clock: ManualClock, store: SqliteStore
) -> None:
    token = await request(desk)
    clock.now = T0 + timedelta(minutes=31)
    outcome = await desk.decide(token, "approve", ALICE, HASH, 42)
    assert (outcome.status, outcome.reason) == ("rejected", "expired")
    stored = await store.get_approval(token[:16])
    assert stored is not None and stored.status == "expired"
    late = await desk.decide(token, "approve", ALICE, HASH, 42)
    assert late.reason == "expired"


OTHER_HASH = action_hash("restart", {}, "container:web")
TAMPER = {"flip": lambda t: flip(t, 40), "cut": lambda t: t[:20]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"token": "flip"}, "bad_mac"),
        ({"token": "cut"}, "malformed"),
        ({"incident": 7}, "wrong_incident"),
        ({"hash": OTHER_HASH}, "action_changed"),
        ({"sender": "mallory@example.test"}, "not_approver"),
        ({"sender": BOB}, "not_approver"),  # an approver, but not the one asked
        ({"sender": ""}, "not_approver"),
    ],
)
async def test_rejections_leave_the_approval_pending(
    desk: ApprovalDesk, store: SqliteStore, change: dict[str, Any], reason: str
) -> None:
    token = await request(desk)
    sent = TAMPER[change["token"]](token) if "token" in change else token
    outcome = await desk.decide(
        sent,
        "approve",
        change.get("sender", ALICE),
        change.get("hash", HASH),
        change.get("incident", 42),
    )
    assert (outcome.status, outcome.reason) == ("rejected", reason)
    assert outcome.message.startswith("rejected: ")
    stored = await store.get_approval(token[:16])
    assert stored is not None and stored.status == "pending"
    assert (await desk.decide(token, "approve", ALICE, HASH, 42)).status == "approved"


async def test_approver_removed_from_config_is_rejected(
    store: SqliteStore, clock: ManualClock
) -> None:
    tokens = ApprovalTokens(SECRET)
    before = ApprovalDesk(store, tokens, [ALICE], clock)
    token = await request(before)
    after = ApprovalDesk(store, tokens, [BOB], clock)
    assert (await after.decide(token, "approve", ALICE, HASH, 42)).reason == "not_approver"


async def test_bad_decision_and_unknown_approval(desk: ApprovalDesk) -> None:
    token = await request(desk)
    assert (await desk.decide(token, "maybe", ALICE, HASH, 42)).reason == "bad_decision"
    unsaved, _ = ApprovalTokens(SECRET).issue(42, HASH, ALICE, now=T0)
    assert (await desk.decide(unsaved, "approve", ALICE, HASH, 42)).reason == "unknown_approval"
    forged, _ = ApprovalTokens(b"attacker-secret-123456").issue(42, HASH, ALICE, now=T0)
    assert (await desk.decide(forged, "approve", ALICE, HASH, 42)).reason == "bad_mac"


async def test_incident_unknown_to_the_caller_uses_the_token(desk: ApprovalDesk) -> None:
    token = await request(desk)
    assert (await desk.decide(token, "approve", ALICE, HASH, None)).status == "approved"


async def test_approval_id_only_in_band(desk: ApprovalDesk, store: SqliteStore) -> None:
    token = await request(desk)
    by_mail = await desk.decide(token[:16], "approve", ALICE, HASH, 42, via="email")
    assert by_mail.reason == "malformed"
    wrong = await desk.decide(token[:16], "approve", BOB, HASH, 42, via="elicitation")
    assert wrong.reason == "not_approver"
    changed = action_hash("restart", {}, "container:web")
    moved = await desk.decide(token[:16], "approve", ALICE, changed, 42, via="elicitation")
    assert moved.reason == "action_changed"
    ok = await desk.decide(token[:16], "approve", ALICE, HASH, 42, via="elicitation")
    assert ok.status == "approved" and ok.approval is not None
    assert ok.approval.via == "elicitation"


async def test_request_checks_the_approver_and_request_all(
    desk: ApprovalDesk, store: SqliteStore
) -> None:
    with pytest.raises(InvalidInput, match="OPSMEDIC_APPROVERS"):
        await request(desk, "mallory@example.test")
    issued = await desk.request_all(42, "restart", {"reason": "died"}, "container:web")
    assert [a.approver for _, a in issued] == [ALICE, BOB]
    assert all(a.action["target"] == "container:web" for _, a in issued)
    for _, approval in issued:
        assert await store.get_approval(approval.id) == approval


async def test_expire_due(desk: ApprovalDesk, clock: ManualClock) -> None:
    await request(desk)
    issued = await desk.request_all(42, "restart", {"reason": "died"}, "container:web")
    approvals = [a for _, a in issued]
    assert await desk.expire_due(approvals) == []
    clock.now = T0 + timedelta(hours=1)
    assert [a.id for a in await desk.expire_due(approvals)] == [a.id for a in approvals]
    assert await desk.expire_due(approvals) == []  # the input list is stale, the store is not
