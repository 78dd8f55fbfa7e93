"""The Store contract. SQLite (default) and MongoDB implement it; one test suite checks both.

All methods are async; implementations run their blocking driver calls in worker threads.
Times are timezone-aware UTC datetimes. Every method is safe to call from several
coroutines at once, and (for the shared store) from several processes at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mcp_server.models import (
    Approval,
    AuditDraft,
    AuditEntry,
    AuditVerdict,
    Event,
    Heartbeat,
    Hold,
    Incident,
    IncidentStatus,
    Job,
    Message,
    Rca,
    Run,
    Severity,
    TimelineEntry,
)

if TYPE_CHECKING:
    from mcp_server.safety.audit_keys import AuditKeys

GENESIS_HASH = "0" * 64
HEARTBEAT_KEEP_S = 86400.0  # heartbeat rows silent this long are deleted
#: Audit fields added after the chain format was released: hashed only when set.
OPTIONAL_AUDIT_FIELDS = ("key_id", "instance")


def canonical_json(data: Any) -> str:
    """Stable JSON: sorted keys, no spaces, UTC ISO timestamps."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def audit_hash(prev_hash: str, body: dict[str, Any], keys: AuditKeys | None = None) -> str | None:
    """Unkeyed entries (no key_id): sha256(prev_hash + canonical JSON of the body).
    Keyed: HMAC-SHA256 of the same text under key `key_id` (in the body, so it is bound);
    None when that key is not in `keys`."""
    text = prev_hash + canonical_json(body)
    key_id = body.get("key_id")
    if key_id is None:
        return hashlib.sha256(text.encode()).hexdigest()
    return keys.mac(str(key_id), text) if keys is not None else None


def audit_body(entry: AuditEntry | dict[str, Any]) -> dict[str, Any]:
    """The hashed part of an entry: everything but prev_hash and hash, in JSON form
    (key_id and instance only when set, so entries written before they existed hash as they
    did)."""
    data = entry.model_dump(mode="json") if isinstance(entry, AuditEntry) else dict(entry)
    data.pop("hash", None)
    data.pop("prev_hash", None)
    data.pop("_id", None)
    for optional in OPTIONAL_AUDIT_FIELDS:
        if data.get(optional) is None:
            data.pop(optional, None)
    return data


class ChainVerifier:
    """Incremental form of verify_chain, for streaming long chains in batches.

    Feed entries in seq order with feed(); it returns a failing verdict at the first bad
    entry (and keeps returning it), else None. unreadable() reports a stored row that could
    not even be parsed. result() gives the final verdict.
    """

    def __init__(self, keys: AuditKeys | None = None, keyed_from: int | None = None) -> None:
        self.prev = GENESIS_HASH
        self.expected_seq = 1
        self.checked = 0
        self.failure: AuditVerdict | None = None
        self.keys = keys
        #: From this seq on every entry must be keyed (from the anchor; else the first keyed).
        self.keyed_from = keyed_from

    def _fail(self, bad_seq: int, reason: str) -> AuditVerdict:
        self.failure = AuditVerdict(ok=False, checked=self.checked, bad_seq=bad_seq, reason=reason)
        return self.failure

    def _missing(self, found: int) -> AuditVerdict:
        want = self.expected_seq
        return self._fail(want, f"seq {want} is missing (found {found} next): deleted or reordered")

    def feed(self, entry: AuditEntry) -> AuditVerdict | None:
        if self.failure is not None:
            return self.failure
        if entry.seq != self.expected_seq:
            return self._missing(entry.seq)
        if entry.prev_hash != self.prev:
            return self._fail(
                entry.seq,
                "prev_hash does not match the previous entry: the chain was cut or reordered",
            )
        keyed = self._keyed_problem(entry)
        if keyed is not None:
            return self._fail(entry.seq, keyed)
        if audit_hash(self.prev, audit_body(entry), self.keys) != entry.hash:
            return self._fail(
                entry.seq, "hash does not match the entry's content: the entry was edited"
            )
        self.prev = entry.hash
        self.expected_seq += 1
        self.checked += 1
        return None

    def _keyed_problem(self, entry: AuditEntry) -> str | None:
        if entry.key_id is None:
            if self.keyed_from is not None and entry.seq >= self.keyed_from:
                return (
                    f"entry {entry.seq} has no HMAC key id but the chain is keyed from seq "
                    f"{self.keyed_from}: it was rewritten and re-hashed without the key"
                )
            return None
        if self.keyed_from is None or entry.seq < self.keyed_from:
            self.keyed_from = entry.seq  # no unkeyed entry may follow a keyed one
        if self.keys is None or entry.key_id not in self.keys.keys:
            return (
                f"entry {entry.seq} is signed with audit key {entry.key_id!r}, which is not "
                "configured: set OPSMEDIC_AUDIT__KEYS (or restore audit.key) to verify it"
            )
        return None

    def unreadable(self, seq: int, why: str) -> AuditVerdict:
        """A stored row at seq could not be parsed into an AuditEntry."""
        if self.failure is not None:
            return self.failure
        if seq != self.expected_seq:
            return self._missing(seq)
        why = f"entry {seq} cannot be read ({why}): it was written or edited outside OpsMedic"
        return self._fail(seq, why)

    def result(self) -> AuditVerdict:
        return self.failure or AuditVerdict(ok=True, checked=self.checked)


def verify_chain(entries: Sequence[AuditEntry], keys: AuditKeys | None = None) -> AuditVerdict:
    """Walk entries in seq order: contiguous seq, linked prev_hash, recomputed hash."""
    verifier = ChainVerifier(keys)
    for entry in entries:
        if verifier.feed(entry) is not None:
            break
    return verifier.result()


@runtime_checkable
class Store(Protocol):
    """Persistence for everything OpsMedic remembers."""

    url: str

    async def open(self) -> None:
        """Connect, create or migrate the schema / indexes. Idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers a trivial query."""

    # --- audit (append-only, hash-chained) -----------------------------------------
    async def append_audit(self, draft: AuditDraft) -> AuditEntry:
        """Give the draft the next seq, prev_hash and hash, and insert it (never update)."""

    async def audit_entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries with seq > after_seq in seq order."""

    async def recent_audit(self, limit: int = 50) -> list[AuditEntry]:
        """The newest entries, newest first."""

    async def verify_audit(self) -> AuditVerdict:
        """Walk the whole chain (see verify_chain)."""

    # --- incidents -----------------------------------------------------------------
    async def open_incident(
        self,
        target: str,
        symptom: str,
        title: str,
        severity: Severity = Severity.warning,
        detail: dict[str, Any] | None = None,
        now: datetime | None = None,
        instance: str | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident or, when one for target+symptom is not closed, bump its count.

        Returns (incident, created). Deduplication holds across processes sharing the store.
        `instance` (the OpsMedic that saw it) is kept on a new incident and names the actor of
        its opened or repeat timeline entry.
        """

    async def get_incident(self, incident_id: int) -> Incident | None: ...

    async def list_incidents(
        self, status: Sequence[IncidentStatus] | None = None, limit: int = 50
    ) -> list[Incident]:
        """Newest first (by updated_at)."""

    async def update_incident(
        self,
        incident_id: int,
        status: IncidentStatus | None = None,
        entry: TimelineEntry | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Incident:
        """Change status and/or append a timeline entry and/or merge detail. NotFound if absent."""

    # --- rca -----------------------------------------------------------------------
    async def put_rca(self, rca: Rca) -> None:
        """Store (replace) the RCA of an incident."""

    async def get_rca(self, incident_id: int) -> Rca | None: ...

    # --- jobs and runs -------------------------------------------------------------
    async def upsert_job(self, job: Job) -> None: ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(self, limit: int = 200) -> list[Job]: ...

    async def put_run(self, run: Run) -> None:
        """Insert or replace a run by id."""

    async def get_run(self, run_id: str) -> Run | None: ...

    async def list_runs(self, subject: str | None = None, limit: int = 50) -> list[Run]:
        """Newest first (by started_at)."""

    # --- events (the long-poll feed and idempotent ingest) ---------------------------
    async def list_actions(
        self, since: datetime, subject: str | None = None, limit: int = 1000
    ) -> list[Run]:
        """Action runs (kind "action") started at or after `since`, oldest first: the durable
        record budgets, backoff and in-flight actions are computed from."""
        ...

    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        """Insert events whose id is new; return the inserted ones with their seq."""

    async def events_after(self, cursor: int = 0, limit: int = 100) -> list[Event]:
        """Events with seq > cursor, oldest first."""

    async def last_event_seq(self) -> int: ...

    # --- approvals -----------------------------------------------------------------
    async def put_approval(self, approval: Approval) -> None: ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def decide_approval(
        self, approval_id: str, status: str, now: datetime, via: str | None = None
    ) -> bool:
        """Move a *pending* approval to status; False if it was not pending (used once)."""

    # --- messages (outbox and processed inbox) ---------------------------------------
    async def enqueue_message(self, message: Message) -> bool:
        """Insert unless a message with this id exists; True when inserted."""

    async def due_messages(
        self, now: datetime, limit: int = 20, direction: str = "out"
    ) -> list[Message]:
        """Queued outgoing messages (mail "out", webhook "hook") whose next_attempt_at <= now,
        oldest first."""

    async def update_message(self, message: Message) -> None: ...

    async def get_message(self, message_id: str) -> Message | None: ...

    async def list_messages(
        self, incident_id: int | None = None, direction: str | None = None, limit: int = 100
    ) -> list[Message]: ...

    # --- leases (one holder at a time across processes) ------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
        """Take or renew the lease if free, expired, or already ours."""

    async def release_lease(self, name: str, holder: str) -> None: ...

    # --- holds (a target a person stopped on purpose; one per target) ----------------
    async def put_hold(self, hold: Hold) -> None:
        """Insert or replace the hold of hold.target."""

    async def delete_hold(self, target: str) -> bool:
        """Remove the target's hold; True when there was one (expired or not)."""

    async def list_holds(self) -> list[Hold]:
        """Every stored hold, expired ones included, ordered by target."""

    async def purge_holds(self, now: datetime) -> list[Hold]:
        """Remove holds whose until <= now; return the removed ones."""

    # --- heartbeats (live instances; the write probe behind /healthz) ----------------
    async def put_heartbeat(self, beat: Heartbeat) -> None:
        """Upsert `beat` keyed by its holder: a real write, so it raises Unavailable when
        the store cannot be written (disk full, read-only, unreachable)."""

    async def list_heartbeats(self, since: datetime) -> list[Heartbeat]:
        """Instances whose heartbeat is at or after `since`, newest first."""


class OpsDelegate:
    """What both implementations share: each runs its driver-level functions (its `ops`
    module, same names in both) in worker threads through `_run`."""

    _ops: Any
    #: HMAC keys for the audit chain (None: unkeyed, as before keys existed).
    audit_keys: AuditKeys | None = None
    #: Seq from which the chain must be keyed (from the anchor), for verify_audit.
    audit_keyed_from: int | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def verify_audit(self) -> AuditVerdict:
        """Stream the chain in batches (other store calls interleave between batches)."""
        verifier = ChainVerifier(self.audit_keys, self.audit_keyed_from)
        after: int | None = 0
        while after is not None:
            after = await self._run(self._ops.verify_batch, verifier, after)
        return verifier.result()

    async def open_incident(
        self,
        target: str,
        symptom: str,
        title: str,
        severity: Severity = Severity.warning,
        detail: dict[str, Any] | None = None,
        now: datetime | None = None,
        instance: str | None = None,
    ) -> tuple[Incident, bool]:
        when = now or datetime.now(UTC)
        found: tuple[Incident, bool] = await self._run(
            self._ops.open_incident, target, symptom, title, severity, detail, when, instance
        )
        return found


def open_store(url: str) -> Store:
    """Pick the implementation from the URL scheme (sqlite:/// or mongodb://)."""
    if url.startswith("sqlite:"):
        from mcp_server.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from mcp_server.store.mongo import MongoStore

        return MongoStore(url)
    from mcp_server.errors import ConfigError

    raise ConfigError(
        f"OPSMEDIC_STORE_URL={url!r} is not supported: use sqlite:///path/to/file.db or mongodb://host:port/db"
    )
