"""MongoDB Store (pymongo): the shared store when several OpsMedic servers run on several hosts.

The sync driver runs in worker threads (at most `max_threads` at once per store). Unique
indexes carry the cross-process guarantees: audit seq (insert-only hash chain), event id
and seq (idempotent ingest), a partial unique index on incidents' open_key (no twins),
and lease documents keyed by name. Integer ids and event seqs come from `counters`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from mcp_server.errors import Conflict, InvalidInput, NotFound, OpsMedicError, Unavailable
from mcp_server.models import (
    Approval,
    AuditDraft,
    AuditEntry,
    Event,
    Heartbeat,
    Hold,
    Incident,
    IncidentStatus,
    Job,
    Message,
    Rca,
    Run,
    TimelineEntry,
)
from mcp_server.store import _mongo_ops as ops
from mcp_server.store import _rows as rows
from mcp_server.store.base import OpsDelegate

logger = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", Job, Run, Rca, Approval, Message, Event, Incident, Hold, Heartbeat)
Db = ops.Db

DEFAULT_DB = "opsmedic"


@contextmanager
def _mongo_errors(url: str) -> Iterator[None]:
    """Translate pymongo/bson exceptions once, at the edge of this backend."""
    try:
        yield
    except OpsMedicError:
        raise
    except DuplicateKeyError as exc:
        raise Conflict(f"MongoDB store: duplicate key ({exc.details}); re-read and retry") from exc
    except ConnectionFailure as exc:
        raise Unavailable(
            f"MongoDB at {_redact(url)} is unreachable ({exc.__class__.__name__}); "
            "check that it runs and OPSMEDIC_STORE_URL is right, then retry"
        ) from exc
    except PyMongoError as exc:
        raise Unavailable(f"MongoDB store failed: {exc}") from exc
    except (BSONError, OverflowError) as exc:
        raise InvalidInput(
            f"value cannot be stored in MongoDB ({exc}); use JSON-safe data"
        ) from exc


def _redact(url: str) -> str:
    """mongodb://user:secret@host -> mongodb://***@host."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}" if "@" in rest else url


class MongoStore(OpsDelegate):
    """Store on a MongoDB database (name from the URL path, default "opsmedic")."""

    _ops = ops

    def __init__(self, url: str, *, max_threads: int = 8, timeout_ms: int = 5000) -> None:
        self.url = url
        self.max_threads = max_threads
        self.timeout_ms = timeout_ms
        self._client: MongoClient[dict[str, Any]] | None = None
        self._db: Db | None = None
        self._limiter = anyio.CapacityLimiter(max_threads)
        # One audit writer and one event writer per process at a time (see the methods).
        self._audit_lock = anyio.Lock()
        self._events_lock = anyio.Lock()
        self._audit_hint = 0  # a seq known to exist: bounds the tail lookup

    # --- plumbing --------------------------------------------------------------------------

    @property
    def db_name(self) -> str:
        return self._db.name if self._db is not None else ""

    def _connect(self) -> tuple[MongoClient[dict[str, Any]], Db]:
        options: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in self.url.lower():
            options["serverSelectionTimeoutMS"] = self.timeout_ms
        client: MongoClient[dict[str, Any]] = MongoClient(self.url, **options)
        try:
            db = client.get_default_database(DEFAULT_DB)
            db.command("ping")
            ops.create_indexes(db)
        except BaseException:
            client.close()
            raise
        return client, db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            raise Unavailable(f"MongoDB store {_redact(self.url)} is not open; call open() first")
        call = partial(self._call, fn, self._db, *args)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    def _call(self, fn: Callable[..., T], db: Db, *args: Any) -> T:
        with _mongo_errors(self.url):
            return fn(db, *args)

    async def open(self) -> None:
        if self._db is not None:
            return
        with _mongo_errors(self.url):
            client, db = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
        self._client, self._db = client, db

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await anyio.to_thread.run_sync(client.close)

    async def ping(self) -> bool:
        try:
            return bool((await self._run(lambda db: db.command("ping"))).get("ok"))
        except OpsMedicError:
            return False

    async def _find(
        self,
        cls: type[M],
        collection: str,
        query: dict[str, Any],
        sort: list[tuple[str, int]],
        limit: int,
    ) -> list[M]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit" and negative as one batch
            return []

        def find(db: Db) -> list[M]:
            found = db[collection].find(query).sort(sort).limit(limit)
            return [rows.from_fields(cls, d, decode_json=False) for d in found]

        return await self._run(find)

    async def _get(self, cls: type[M], collection: str, key: Any) -> M | None:
        return await self._run(lambda db: ops.load(cls, db[collection].find_one({"_id": key})))

    async def _replace(self, collection: str, key: Any, model: Any) -> None:
        def replace(db: Db) -> None:
            db[collection].replace_one({"_id": key}, ops.doc(model, key), upsert=True)

        await self._run(replace)

    # --- audit -----------------------------------------------------------------------------

    async def append_audit(self, draft: AuditDraft) -> AuditEntry:
        """One writer per process at a time; other processes are raced via the unique seq."""
        async with self._audit_lock:
            entry = await self._run(ops.append_audit, draft, self._audit_hint, self.audit_keys)
            self._audit_hint = entry.seq
            return entry

    async def audit_entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        if limit is not None and limit <= 0:
            return []
        query = {"seq": {"$gt": after_seq}}
        return await self._run(ops.audit_docs, query, ASCENDING, limit)

    async def recent_audit(self, limit: int = 50) -> list[AuditEntry]:
        if limit <= 0:
            return []
        return await self._run(ops.audit_docs, {}, DESCENDING, limit)

    # --- incidents -------------------------------------------------------------------------

    async def get_incident(self, incident_id: int) -> Incident | None:
        return await self._get(Incident, "incidents", incident_id)

    async def list_incidents(
        self, status: Sequence[IncidentStatus] | None = None, limit: int = 50
    ) -> list[Incident]:
        query = {} if status is None else {"status": {"$in": [str(s) for s in status]}}
        sort = [("updated_at", DESCENDING), ("_id", DESCENDING)]
        return await self._find(Incident, "incidents", query, sort, limit)

    async def update_incident(
        self,
        incident_id: int,
        status: IncidentStatus | None = None,
        entry: TimelineEntry | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Incident:
        return await self._run(ops.update_incident, incident_id, status, entry, detail)

    # --- rca, jobs, runs -------------------------------------------------------------------

    async def put_rca(self, rca: Rca) -> None:
        await self._replace("rca", rca.incident_id, rca)

    async def get_rca(self, incident_id: int) -> Rca | None:
        return await self._get(Rca, "rca", incident_id)

    async def upsert_job(self, job: Job) -> None:
        await self._replace("jobs", job.id, job)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._get(Job, "jobs", job_id)

    async def list_jobs(self, limit: int = 200) -> list[Job]:
        """Ordered by id."""
        return await self._find(Job, "jobs", {}, [("_id", ASCENDING)], limit)

    async def put_run(self, run: Run) -> None:
        await self._replace("runs", run.id, run)

    async def get_run(self, run_id: str) -> Run | None:
        return await self._get(Run, "runs", run_id)

    async def list_runs(self, subject: str | None = None, limit: int = 50) -> list[Run]:
        query = {} if subject is None else {"subject": subject}
        sort = [("started_at", DESCENDING), ("_id", DESCENDING)]
        return await self._find(Run, "runs", query, sort, limit)

    async def list_actions(
        self, since: datetime, subject: str | None = None, limit: int = 1000
    ) -> list[Run]:
        query: dict[str, Any] = {"kind": "action", "started_at": {"$gte": rows.ts_text(since)}}
        if subject is not None:
            query["subject"] = subject
        sort = [("started_at", ASCENDING), ("_id", ASCENDING)]
        return await self._find(Run, "runs", query, sort, limit)

    # --- events ----------------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        """insert_many(ordered=False) with reserved seqs; duplicates by id are skipped.

        Batches from this process are inserted one at a time so a reader here never sees a
        later seq before an earlier one (writers in other processes can still interleave).
        """
        if not events:
            return []
        async with self._events_lock:
            return await self._run(ops.add_events, events)

    async def events_after(self, cursor: int = 0, limit: int = 100) -> list[Event]:
        query = {"seq": {"$gt": cursor}}
        return await self._find(Event, "events", query, [("seq", ASCENDING)], limit)

    async def last_event_seq(self) -> int:
        return await self._run(ops.last_event_seq)

    # --- approvals -------------------------------------------------------------------------

    async def put_approval(self, approval: Approval) -> None:
        await self._replace("approvals", approval.id, approval)

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._get(Approval, "approvals", approval_id)

    async def decide_approval(
        self, approval_id: str, status: str, now: datetime, via: str | None = None
    ) -> bool:
        rows.check_approval_status(status)
        changes = {"status": status, "decided_at": rows.ts_text(now)}
        if via is not None:
            changes["via"] = via
        query = {"_id": approval_id, "status": "pending"}
        result = await self._run(lambda db: db.approvals.update_one(query, {"$set": changes}))
        return result.modified_count == 1

    # --- messages --------------------------------------------------------------------------

    async def enqueue_message(self, message: Message) -> bool:
        def insert(db: Db) -> bool:
            try:
                db.messages.insert_one(ops.doc(message, message.id))
            except DuplicateKeyError:
                return False
            return True

        return await self._run(insert)

    async def due_messages(
        self, now: datetime, limit: int = 20, direction: str = "out"
    ) -> list[Message]:
        query = {
            "direction": direction,
            "status": "queued",
            "next_attempt_at": {"$lte": rows.ts_text(now)},
        }
        sort = [("next_attempt_at", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
        return await self._find(Message, "messages", query, sort, limit)

    async def update_message(self, message: Message) -> None:
        query = {"_id": message.id}
        result = await self._run(
            lambda db: db.messages.replace_one(query, ops.doc(message, message.id))
        )
        if result.matched_count == 0:
            raise NotFound(f"no message {message.id!r}; enqueue_message it first")

    async def get_message(self, message_id: str) -> Message | None:
        return await self._get(Message, "messages", message_id)

    async def list_messages(
        self, incident_id: int | None = None, direction: str | None = None, limit: int = 100
    ) -> list[Message]:
        """Newest first (by created_at)."""
        filters = {"incident_id": incident_id, "direction": direction}
        query = {k: v for k, v in filters.items() if v is not None}
        sort = [("created_at", DESCENDING), ("_id", DESCENDING)]
        return await self._find(Message, "messages", query, sort, limit)

    # --- leases ----------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
        return await self._run(ops.acquire_lease, name, holder, ttl_s, now)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._run(lambda db: db.leases.delete_one({"_id": name, "holder": holder}))

    # --- holds -----------------------------------------------------------------------------

    async def put_hold(self, hold: Hold) -> None:
        await self._replace("holds", hold.target, hold)

    async def delete_hold(self, target: str) -> bool:
        result = await self._run(lambda db: db.holds.delete_one({"_id": target}))
        return bool(result.deleted_count == 1)

    async def list_holds(self) -> list[Hold]:
        def find(db: Db) -> list[Hold]:
            found = db.holds.find({}).sort("_id", ASCENDING)
            return [rows.from_fields(Hold, d, decode_json=False) for d in found]

        return await self._run(find)

    async def purge_holds(self, now: datetime) -> list[Hold]:
        return await self._run(ops.purge_holds, now)

    # --- heartbeats ------------------------------------------------------------------------

    async def put_heartbeat(self, beat: Heartbeat) -> None:
        await self._run(ops.put_heartbeat, beat)

    async def list_heartbeats(self, since: datetime) -> list[Heartbeat]:
        query = {"ts": {"$gte": rows.ts_text(since)}}
        sort = [("ts", DESCENDING), ("_id", ASCENDING)]
        return await self._find(Heartbeat, "heartbeats", query, sort, 500)
