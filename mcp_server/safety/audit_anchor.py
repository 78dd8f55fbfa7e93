"""The audit head (seq, hash) anchored outside the store, so truncation and re-hashing show.

The server writes the anchor file (default: `<data_dir>.audit-head.json`, beside the data
dir) at start, every OPSMEDIC_AUDIT__ANCHOR_INTERVAL_S and on shutdown, and exports the seq
as the `opsmedic_audit_head_seq` metric for a scraper to remember. The file is HMAC'd with
the audit key. An anchor is only ever moved forward along the same chain: if the store no
longer holds the anchored entry unchanged, anchoring stops and says why (and `opsmedic audit
verify` exits 1 naming it) instead of blessing the rewritten chain.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mcp_server.errors import OpsMedicError
from mcp_server.models import AuditEntry, AuditVerdict
from mcp_server.safety.audit_keys import AuditKeys
from mcp_server.store.base import Store, canonical_json

logger = logging.getLogger(__name__)


class AnchorError(OpsMedicError):
    """The store does not extend the anchored chain (truncated or rewritten), or the anchor
    file itself was edited."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    keyed_from: int | None
    ts: str
    key_id: str = ""
    mac: str = ""


def default_anchor_path(data_dir: Path) -> Path:
    data = Path(data_dir).absolute()
    return data.parent / f"{data.name}.audit-head.json"


def read_anchor(path: Path, keys: AuditKeys) -> Anchor | None:
    """The anchor at `path`, None if there is none; AnchorError if it was tampered with."""
    try:
        data = json.loads(path.read_text())
        anchor = Anchor(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise AnchorError(f"audit anchor {path} cannot be read ({exc}); restore it") from None
    if keys.mac(anchor.key_id, _signed_text(anchor)) != anchor.mac:
        raise AnchorError(f"audit anchor {path} does not carry a valid HMAC: it was edited")
    return anchor


def write_anchor(
    path: Path, seq: int, hash_: str, keyed_from: int | None, keys: AuditKeys
) -> Anchor:
    """Write atomically (temp file + rename) and return the anchor written."""
    ts = datetime.now(UTC).isoformat(timespec="seconds")
    draft = Anchor(seq, hash_, keyed_from, ts, key_id=keys.current_id)
    anchor = Anchor(
        **{**asdict(draft), "mac": keys.mac(keys.current_id, _signed_text(draft)) or ""}
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(anchor)))
    os.replace(tmp, path)
    return anchor


def _signed_text(anchor: Anchor) -> str:
    data = asdict(anchor)
    data.pop("mac")
    return canonical_json(data)


async def _entry_at(store: Store, seq: int) -> AuditEntry | None:
    found = await store.audit_entries(after_seq=seq - 1, limit=1)
    return found[0] if found and found[0].seq == seq else None


async def check_against_anchor(store: Store, anchor: Anchor, path: Path) -> AuditVerdict | None:
    """A failing verdict when the store does not hold the anchored entry unchanged."""
    if anchor.seq == 0:
        return None
    head = await store.recent_audit(1)
    last = head[0].seq if head else 0
    if last < anchor.seq:
        return AuditVerdict(
            ok=False, checked=last, bad_seq=last + 1,
            reason=f"the chain was truncated: the anchor ({path}) says it reached seq "
            f"{anchor.seq}, but the store ends at seq {last}",
        )  # fmt: skip
    entry = await _entry_at(store, anchor.seq)
    if entry is None or entry.hash != anchor.hash:
        return AuditVerdict(
            ok=False, checked=anchor.seq - 1, bad_seq=anchor.seq,
            reason=f"entry {anchor.seq} differs from the anchored head ({path}): the chain "
            "was rewritten and re-hashed",
        )  # fmt: skip
    return None


async def advance_anchor(store: Store, keys: AuditKeys, path: Path) -> Anchor:
    """Move the anchor to the store's current head; AnchorError if the store does not extend
    the anchored chain (the anchor is then left as it is, as evidence)."""
    old = read_anchor(path, keys)
    if old is not None:
        problem = await check_against_anchor(store, old, path)
        if problem is not None:
            raise AnchorError(problem.reason or "audit chain does not extend its anchor")
    head = await store.recent_audit(1)
    seq, hash_ = (head[0].seq, head[0].hash) if head else (0, "")
    # first anchor: entries after the current head are keyed (the migration point)
    first = seq if head and head[0].key_id else seq + 1
    keyed_from = old.keyed_from if old is not None else first
    if old is not None and (old.seq, old.hash, old.keyed_from) == (seq, hash_, keyed_from):
        return old
    return write_anchor(path, seq, hash_, keyed_from, keys)


async def verify_anchored(store: Store, keys: AuditKeys, path: Path) -> AuditVerdict:
    """The chain verified with its keys, then against the anchor (truncation, re-hashing)."""
    try:
        anchor = read_anchor(path, keys)
    except AnchorError as exc:
        return AuditVerdict(ok=False, checked=0, bad_seq=None, reason=str(exc))
    if anchor is not None and hasattr(store, "audit_keyed_from"):
        store.audit_keyed_from = anchor.keyed_from
    verdict = await store.verify_audit()
    if not verdict.ok or anchor is None:
        return verdict
    return await check_against_anchor(store, anchor, path) or verdict
