"""Store contract, keyed audit chain (issue 12): HMAC entries, key rotation, the anchor
outside the store and the migration of an unkeyed chain, on SQLite and MongoDB alike."""

from __future__ import annotations

from pathlib import Path

from mcp_server.safety.audit import Auditor
from mcp_server.safety.audit_keys import AuditKeys
from mcp_server.safety.redaction import Redactor
from mcp_server.store.base import Store, audit_body, audit_hash
from tests.store.conftest import Raw
from tests.store.test_contract_audit import draft, fill

K1 = AuditKeys("k1", {"k1": b"first-secret-0123456789"})
K2 = AuditKeys("k2", {"k2": b"second-secret-012345678", "k1": b"first-secret-0123456789"})


async def test_migration_rotation_and_anchor(store: Store, raw: Raw, tmp_path: Path) -> None:
    anchor = tmp_path / "head.json"
    await fill(store, 3)  # written before keys existed
    auditor = Auditor(store, Redactor(), K1, anchor)
    assert await auditor.anchor() == "running"  # migration point: keyed from seq 4
    for n in range(4, 7):
        entry = await store.append_audit(draft(n))
        assert entry.key_id == "k1"
    rotated = Auditor(store, Redactor(), K2, anchor)
    last = await store.append_audit(draft(7))
    assert last.key_id == "k2"
    assert await rotated.anchor() == "running" and rotated.anchored_seq == 7
    verdict = await rotated.verify()
    assert verdict.ok and verdict.checked == 7
    # a verifier without the old key cannot vouch for entries signed with it
    only_new = Auditor(store, Redactor(), AuditKeys("k2", {"k2": K2.keys["k2"]}), anchor)
    assert not (await only_new.verify()).ok


async def test_rehash_without_key_and_truncation_are_caught(
    store: Store, raw: Raw, tmp_path: Path
) -> None:
    anchor = tmp_path / "head.json"
    auditor = Auditor(store, Redactor(), K1, anchor)
    entries = await fill(store, 6)
    assert await auditor.anchor() == "running"
    # an attacker edits entry 4 and recomputes a plain sha256 for it (no key)
    body = {**audit_body(entries[3]), "outcome": "refused"}
    body.pop("key_id")
    raw.edit(4, "outcome", "refused")
    raw.edit(4, "key_id", None)
    raw.edit(4, "hash", audit_hash(entries[3].prev_hash, body))
    verdict = await auditor.verify()
    assert not verdict.ok and verdict.bad_seq == 4 and "re-hashed" in (verdict.reason or "")
    raw.edit(4, "outcome", entries[3].outcome)  # put it back, then cut the tail
    raw.edit(4, "key_id", "k1")
    raw.edit(4, "hash", entries[3].hash)
    assert (await auditor.verify()).ok
    raw.delete(6)
    raw.delete(5)
    verdict = await auditor.verify()
    assert not verdict.ok and "truncated" in (verdict.reason or "")
    assert (await auditor.anchor()).startswith("failed")  # never re-anchored lower
