"""Blocking pymongo operations behind MongoStore; each takes the database, runs in a worker thread.

Only pymongo's public API and server features of MongoDB 4.2+ are used (pipeline updates,
partial unique indexes), so a real MongoDB and the SecantusDB test server both work.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from mcp_server.errors import Conflict, NotFound, Unavailable
from mcp_server.models import (
    AuditDraft,
    AuditEntry,
    Event,
    Heartbeat,
    Hold,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
    utcnow,
)
from mcp_server.safety.audit_keys import AuditKeys
from mcp_server.store import _rows as rows
from mcp_server.store.base import GENESIS_HASH, HEARTBEAT_KEEP_S, ChainVerifier

M = TypeVar("M", bound=BaseModel)
Db = Database[dict[str, Any]]

AUDIT_RETRIES = 200
VERIFY_BATCH = 2000
_DUPLICATE_KEY = 11000

INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    "audit": [([("seq", ASCENDING)], {"unique": True, "name": "seq_unique"})],
    "events": [([("seq", ASCENDING)], {"unique": True, "name": "seq_unique"})],
    "incidents": [
        # open_key exists only while an incident is not resolved: one open incident per key.
        (
            [("open_key", ASCENDING)],
            {
                "unique": True,
                "name": "open_key_unique",
                "partialFilterExpression": {"open_key": {"$exists": True}},
            },
        ),
        ([("updated_at", DESCENDING)], {"name": "updated_at"}),
        ([("status", ASCENDING), ("updated_at", DESCENDING)], {"name": "status_updated_at"}),
    ],
    "runs": [
        ([("started_at", DESCENDING)], {"name": "started_at"}),
        ([("subject", ASCENDING), ("started_at", DESCENDING)], {"name": "subject_started_at"}),
    ],
    "heartbeats": [([("ts", DESCENDING)], {"name": "ts"})],
    "messages": [
        ([("status", ASCENDING), ("next_attempt_at", ASCENDING)], {"name": "due"}),
        ([("incident_id", ASCENDING), ("created_at", DESCENDING)], {"name": "incident"}),
    ],
    "holds": [([("until", ASCENDING)], {"name": "until"})],
}


def create_indexes(db: Db) -> None:
    for collection, indexes in INDEXES.items():
        for keys, options in indexes:
            db[collection].create_index(keys, **options)


def doc(model: BaseModel, key: Any) -> dict[str, Any]:
    return {"_id": key, **rows.to_fields(model, encode_json=False)}


def load(cls: type[M], found: dict[str, Any] | None) -> M | None:
    return None if found is None else rows.from_fields(cls, found, decode_json=False)


def next_ids(db: Db, name: str, count: int) -> int:
    """Reserve `count` consecutive integers from counter `name`; return the first."""
    for _ in range(3):  # a first-time upsert can race another process's upsert
        try:
            after = db.counters.find_one_and_update(
                {"_id": name},
                {"$inc": {"n": count}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            continue
        if after is not None:
            return int(after["n"]) - count + 1
    raise Unavailable(f"counter {name!r} keeps colliding; retry")


# --- audit -----------------------------------------------------------------------------------


def tail(collection: Collection[dict[str, Any]], hint: int) -> dict[str, Any] | None:
    """The document with the highest seq. `hint` (a seq known to exist, or less) bounds the
    scan: some servers (SecantusDB) walk the whole index for an unbounded sort-desc-limit-1."""
    projection = {"seq": 1, "hash": 1}
    if hint > 0:
        found = collection.find_one({"seq": {"$gte": hint}}, projection, sort=[("seq", DESCENDING)])
        if found is not None:
            return found
    return collection.find_one({}, projection, sort=[("seq", DESCENDING)])


def append_audit(
    db: Db, draft: AuditDraft, hint: int = 0, keys: AuditKeys | None = None
) -> AuditEntry:
    """Insert-only: read the tail, chain onto it, insert with a unique seq; retry if beaten."""
    for attempt in range(AUDIT_RETRIES):
        last = tail(db.audit, hint)
        seq, prev = (int(last["seq"]) + 1, str(last.get("hash"))) if last else (1, GENESIS_HASH)
        entry = rows.chain_entry(draft, seq, prev, keys)
        try:
            db.audit.insert_one({"_id": seq, **rows.audit_record(entry)})
            return entry
        except DuplicateKeyError:
            time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # another writer won
    raise Unavailable("the audit chain is too contended right now; retry the action shortly")


def audit_docs(db: Db, query: dict[str, Any], sort: int, limit: int | None) -> list[AuditEntry]:
    return rows.parse_audit_records(db.audit.find(query).sort("seq", sort).limit(limit or 0))


def verify_batch(db: Db, verifier: ChainVerifier, after: int) -> int | None:
    """Feed the next batch; return the last seq read, or None when done or failed."""
    batch = list(db.audit.find({"seq": {"$gt": after}}).sort("seq", ASCENDING).limit(VERIFY_BATCH))
    return rows.feed_chain(verifier, batch, VERIFY_BATCH)


# --- incidents -------------------------------------------------------------------------------


def _literal_set(values: dict[str, Any]) -> dict[str, Any]:
    return {k: {"$literal": v} for k, v in values.items()}


def bump_incident(
    db: Db, key: str, detail: dict[str, Any] | None, now: datetime, instance: str | None = None
) -> Incident | None:
    stamp = rows.ts_text(now)
    entry = rows.to_fields(rows.repeat_entry(now, instance), encode_json=False)
    update = {
        "count": {"$add": ["$count", 1]},
        **_literal_set({"last_seen_at": stamp, "updated_at": stamp}),
        "detail": {"$mergeObjects": ["$detail", {"$literal": rows.plain(detail)}]},
        "timeline": {"$concatArrays": ["$timeline", {"$literal": [entry]}]},
    }
    found = db.incidents.find_one_and_update(
        {"open_key": key}, [{"$set": update}], return_document=ReturnDocument.AFTER
    )
    return load(Incident, found)


def open_incident(
    db: Db,
    target: str,
    symptom: str,
    title: str,
    severity: Severity,
    detail: dict[str, Any] | None,
    now: datetime,
    instance: str | None = None,
) -> tuple[Incident, bool]:
    key = rows.open_key(target, symptom)
    for _ in range(10):
        bumped = bump_incident(db, key, detail, now, instance)
        if bumped is not None:
            return bumped, False
        new_id = next_ids(db, "incidents", 1)
        incident = rows.new_incident(
            new_id, target, symptom, title, severity, detail, now, instance
        )
        try:
            db.incidents.insert_one({**doc(incident, incident.id), "open_key": key})
            return incident, True
        except DuplicateKeyError:
            continue  # another process opened it first: bump theirs
    raise Conflict(f"incident for {target} {symptom} is changing too fast; retry")


def update_incident(
    db: Db,
    incident_id: int,
    status: IncidentStatus | None,
    entry: TimelineEntry | None,
    detail: dict[str, Any] | None,
) -> Incident:
    now = entry.ts if entry is not None else utcnow()
    for _ in range(10):
        current = load(Incident, db.incidents.find_one({"_id": incident_id}))
        if current is None:
            raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
        stages = _incident_update(current, status, entry, detail, now)
        try:
            found = db.incidents.find_one_and_update(
                {"_id": incident_id, "status": str(current.status)},
                stages,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            raise Conflict(
                f"incident {incident_id} cannot be reopened: a newer incident for "
                f"{current.target} {current.symptom} is open; update that one instead"
            ) from exc
        updated = load(Incident, found)
        if updated is not None:
            return updated
    raise Conflict(f"incident {incident_id} is changing too fast; retry")


def _incident_update(
    current: Incident,
    status: IncidentStatus | None,
    entry: TimelineEntry | None,
    detail: dict[str, Any] | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Pipeline update (literal values, so dotted or $-keys in detail stay data)."""
    changes = rows.status_changes(current.status, status, now)
    values = {k: rows.ts_text(v) if isinstance(v, datetime) else v for k, v in changes.items()}
    values = {k: str(v) if isinstance(v, IncidentStatus) else v for k, v in values.items()}
    update = _literal_set({**values, "updated_at": rows.ts_text(now)})
    if detail:
        update["detail"] = {"$mergeObjects": ["$detail", {"$literal": rows.plain(detail)}]}
    if entry is not None:
        item = rows.to_fields(entry, encode_json=False)
        update["timeline"] = {"$concatArrays": ["$timeline", {"$literal": [item]}]}
    final = status if status is not None else current.status
    stages: list[dict[str, Any]] = [{"$set": update}]
    if rows.is_closed(final):
        stages.append({"$unset": "open_key"})
    else:
        update["open_key"] = {"$literal": rows.open_key(current.target, current.symptom)}
    return stages


# --- events and leases -----------------------------------------------------------------------


def add_events(db: Db, events: Sequence[Event]) -> list[Event]:
    by_id: dict[str, Event] = {}
    for event in events:
        by_id.setdefault(event.id, event)  # the first occurrence of an id wins, in its place
    unique = list(by_id.values())
    known = {d["_id"] for d in db.events.find({"_id": {"$in": [e.id for e in unique]}}, {"_id": 1})}
    fresh = [e for e in unique if e.id not in known]
    if not fresh:
        return []
    first = next_ids(db, "events", len(fresh))
    docs = [{**doc(e, e.id), "seq": first + i} for i, e in enumerate(fresh)]
    lost: set[int] = set()
    try:
        db.events.insert_many(docs, ordered=False)
    except BulkWriteError as exc:  # a concurrent writer inserted some of the same ids
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise
        lost = {int(e["index"]) for e in errors}
    return [e.model_copy(update={"seq": first + i}) for i, e in enumerate(fresh) if i not in lost]


def last_event_seq(db: Db) -> int:
    counter = db.counters.find_one({"_id": "events"})
    hint = int(counter["n"]) - 1000 if counter else 0  # seqs are dense but for rare races
    found = tail(db.events, hint)
    return int(found["seq"]) if found else 0


def put_heartbeat(db: Db, beat: Heartbeat) -> None:
    """Upsert this instance's document; forget instances silent for HEARTBEAT_KEEP_S."""
    db.heartbeats.replace_one({"_id": beat.holder}, doc(beat, beat.holder), upsert=True)
    old = rows.ts_text(beat.ts - timedelta(seconds=HEARTBEAT_KEEP_S))
    db.heartbeats.delete_many({"ts": {"$lt": old}})


def acquire_lease(db: Db, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
    expires = rows.ts_text(now + timedelta(seconds=ttl_s))
    free = {"$or": [{"holder": holder}, {"expires_at": {"$lte": rows.ts_text(now)}}]}
    try:
        db.leases.find_one_and_update(
            {"_id": name, **free}, {"$set": {"holder": holder, "expires_at": expires}}, upsert=True
        )
    except DuplicateKeyError:  # it exists and is held by someone else: the upsert lost
        return False
    return True


# --- holds -----------------------------------------------------------------------------------


def purge_holds(db: Db, now: datetime) -> list[Hold]:
    """Delete expired holds one by one, so each is reported by the one process that removed it."""
    removed: list[Hold] = []
    expired = {"until": {"$ne": None, "$lte": rows.ts_text(now)}}
    for found in db.holds.find(expired).sort("_id", ASCENDING):
        # until in the filter too: a hold renewed meanwhile is not expired any more
        if db.holds.delete_one({"_id": found["_id"], "until": found["until"]}).deleted_count:
            removed.append(rows.from_fields(Hold, found, decode_json=False))
    return removed
