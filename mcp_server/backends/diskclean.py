"""clean_disk: plan exactly which files go, then delete exactly that plan.

`DiskPlanner.plan()` walks the clean roots (OPSMEDIC_CLEAN_ROOTS) without following any
symlink and without crossing into other filesystems, and lists regular files (and symlinks
themselves, never their targets) that match a CleanRule. Each item records size, mtime_ns,
inode and device; the plan id is a hash of the item list.

`DiskPlanner.apply()` deletes an item only if it is still the same file (size, mtime_ns,
inode, device) in the same place inside a root. Directories are opened one component at a
time with O_NOFOLLOW, so a directory swapped for a symlink between plan and apply is
skipped, never followed. Files are removed with unlink; directories are never removed.

Optional Docker items (dangling images, stopped unmanaged containers, build cache) come
from a `DockerCleaner` passed in; the planner only lists them and asks it to remove them.
Plan and apply do blocking file-system work: call them from a worker thread.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mcp_server.errors import Conflict, InvalidInput, NotFound, OpsMedicError, Refused
from mcp_server.safety.paths import CLEAN_ROOTS, is_within, resolve_under_roots
from mcp_server.settings import CleanRule, Settings

logger = logging.getLogger(__name__)

ItemKind = Literal["file", "symlink", "docker_image", "docker_container", "build_cache"]
SkipReason = Literal["changed", "missing", "outside", "error"]
_Skip = tuple[SkipReason, str]
DOCKER_KINDS: tuple[str, ...] = ("docker_image", "docker_container", "build_cache")
#: Hard cap on items one plan holds, so a huge tree cannot exhaust memory.
MAX_PLAN_ITEMS = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class DockerCleaner(Protocol):
    """What the planner needs from the Docker backend (a fake in tests)."""

    def list_cleanable(self, kinds: Collection[str]) -> Iterable[Mapping[str, Any]]:
        """Candidates of the given kinds, each {"kind", "id", "size", "label"}."""
        ...

    def remove_cleanable(self, kind: str, ref: str) -> int:
        """Remove one item if it is still safe to (image still dangling, container still
        stopped and unmanaged); return bytes freed. Raise Conflict when it changed,
        NotFound when it is gone, Unavailable when Docker cannot be reached."""
        ...


@dataclass(frozen=True)
class CleanItem:
    """One thing a plan deletes. For docker kinds, `path` is the Docker id."""

    kind: ItemKind
    path: str
    size: int
    mtime_ns: int = 0
    inode: int = 0
    dev: int = 0
    root: str = ""  # the clean root (real path) a file lies under; "" for docker items
    label: str = ""  # the rule glob that matched, or the image tag / container name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CleanPlan:
    """The exact list of items to delete, identified by plan_id. Store it with to_dict()."""

    plan_id: str
    created_at: float
    roots: list[str]
    items: list[CleanItem]
    truncated: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["items"] = [item.to_dict() for item in self.items]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CleanPlan:
        """Rebuild a stored plan; raise Conflict if its items no longer match its id."""
        try:
            items = [CleanItem(**item) for item in data["items"]]
            known = ("plan_id", "created_at", "roots", "truncated", "notes")
            plan = cls(items=items, **{k: data[k] for k in known if k in data})
        except (KeyError, TypeError) as exc:
            raise Conflict(f"stored plan is malformed ({exc}); make a new plan") from None
        if plan_id_of(items) != plan.plan_id:
            raise Conflict(
                f"plan {plan.plan_id} does not match its items (edited in the store?); "
                "call clean_disk(action='plan') for a fresh plan"
            )
        return plan

    def view(self, max_items: int) -> dict[str, Any]:
        """What a person or a model sees: totals and the largest `max_items` items."""
        shown = sorted(self.items, key=lambda i: (-i.size, i.path))[: max(0, max_items)]
        return {
            "plan_id": self.plan_id,
            "created_at": self.created_at,
            "roots": self.roots,
            "total_items": len(self.items),
            "total_bytes": self.total_bytes,
            "items": [
                {"kind": i.kind, "path": i.path, "size": i.size, "label": i.label} for i in shown
            ],
            "more_items": len(self.items) - len(shown),
            "truncated": self.truncated,
            "notes": self.notes,
            "next": f"call clean_disk(action='apply', plan_id='{self.plan_id}') to delete "
            "exactly these items; anything changed since the plan is skipped",
        }


@dataclass
class CleanResult:
    """What apply did: deleted items, skipped ones with a reason, bytes freed."""

    plan_id: str
    deleted: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    bytes_freed: int = 0

    def skip(self, item: CleanItem, reason: SkipReason, detail: str) -> None:
        logger.info("clean_disk skipped %s (%s): %s", item.path, reason, detail)
        self.skipped.append(
            {"kind": item.kind, "path": item.path, "reason": reason, "detail": detail}
        )

    def to_dict(self, max_items: int | None = None) -> dict[str, Any]:
        cap = max_items if max_items is not None else len(self.deleted) + len(self.skipped)
        return {
            "plan_id": self.plan_id,
            "deleted_count": len(self.deleted),
            "skipped_count": len(self.skipped),
            "bytes_freed": self.bytes_freed,
            "deleted": self.deleted[:cap],
            "skipped": self.skipped[:cap],
        }


def plan_id_of(items: Sequence[CleanItem]) -> str:
    """sha256 of the canonical item list (sorted by kind and path), first 16 hex digits."""
    ordered = sorted((item.to_dict() for item in items), key=lambda d: (d["kind"], d["path"]))
    text = json.dumps(ordered, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DiskPlanner:
    """Plans and applies clean-ups inside `clean_roots` only. See the module doc."""

    def __init__(
        self,
        clean_roots: Sequence[str],
        rules: Sequence[CleanRule],
        max_items: int = 500,
        clock: Callable[[], float] = time.time,
        docker: DockerCleaner | None = None,
        docker_kinds: Collection[str] = (),
        plan_ttl_s: float = 3600.0,
    ) -> None:
        unknown = set(docker_kinds) - set(DOCKER_KINDS)
        if unknown:
            raise InvalidInput(f"unknown docker item kinds {sorted(unknown)}; use {DOCKER_KINDS}")
        self.clean_roots = [r.strip() for r in clean_roots if r and r.strip()]
        self.rules = list(rules)
        self.max_items = max_items
        self.clock = clock
        self.docker = docker
        self.docker_kinds = tuple(k for k in DOCKER_KINDS if k in docker_kinds)
        self.plan_ttl_s = plan_ttl_s

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        docker: DockerCleaner | None = None,
    ) -> DiskPlanner:
        c = settings.clean
        flags = (c.docker_dangling_images, c.docker_stopped_unmanaged, c.docker_build_cache)
        kinds = [kind for kind, on in zip(DOCKER_KINDS, flags, strict=True) if on]
        return cls(settings.clean_roots, c.rules, c.max_items, clock, docker, kinds)

    # --- plan ---------------------------------------------------------------------------

    def plan(self, root: str | None = None) -> CleanPlan:
        """List what matches the rules under every clean root, or under `root` only (which
        must be a clean root or lie inside one). Docker items are included when `root` is
        None and Docker kinds are enabled. Raise Refused for a root outside the clean roots."""
        real_roots = self._real_roots()
        starts = [self._start_of(root, real_roots)] if root is not None else _outermost(real_roots)
        now = self.clock()
        items: list[CleanItem] = []
        notes: list[str] = []
        truncated = False
        for start in starts:
            base = max((r for r in real_roots if is_within(start, r)), key=len)
            truncated = self._scan(base, start, now, items, notes) or truncated
        if root is None and self.docker_kinds:
            items.extend(self._docker_items(notes))
        unique = {(i.kind, i.path): i for i in items}
        ordered = sorted(unique.values(), key=lambda i: (i.kind, i.path))
        return CleanPlan(
            plan_id=plan_id_of(ordered),
            created_at=now,
            roots=starts,
            items=ordered,
            truncated=truncated,
            notes=notes,
        )

    def _real_roots(self) -> list[str]:
        if not self.clean_roots:
            raise Refused(
                "clean_disk has no roots: set OPSMEDIC_CLEAN_ROOTS to the directories it may "
                "clean, e.g. /var/tmp/app"
            )
        return [os.path.realpath(r) for r in self.clean_roots]

    def _start_of(self, root: str, real_roots: list[str]) -> str:
        real = str(resolve_under_roots(root, self.clean_roots, CLEAN_ROOTS))
        if not any(is_within(real, r) for r in real_roots):  # belt and braces
            raise Refused(
                f"root {root!r} is outside OPSMEDIC_CLEAN_ROOTS ({', '.join(real_roots)})"
            )
        return real

    def _scan(
        self, base: str, start: str, now: float, out: list[CleanItem], notes: list[str]
    ) -> bool:
        """Walk `start` (inside clean root `base`); append matches; True if capped."""
        try:
            root_dev = os.stat(start, follow_symlinks=False).st_dev
        except OSError as exc:
            notes.append(f"{start}: {exc.strerror or exc}; nothing planned there")
            return False
        pending: list[tuple[str, ...]] = [Path(start).relative_to(base).parts]
        while pending:
            parts = pending.pop()
            try:
                fd = _open_dir(base, parts)
            except OSError as exc:
                notes.append(f"{os.path.join(base, *parts)}: {exc.strerror or exc}; skipped")
                continue
            try:
                with os.scandir(fd) as it:  # stat() below needs fd open: finish inside
                    entries = [(e.name, _lstat(e)) for e in it]
            finally:
                os.close(fd)
            for name, st in sorted(entries, key=lambda pair: pair[0]):
                rel = (*parts, name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    if st.st_dev == root_dev:
                        pending.append(rel)
                    else:
                        notes.append(f"{os.path.join(base, *rel)}: a mount point; not entered")
                elif st is not None:
                    self._consider(base, rel, st, now, out)
            if len(out) >= MAX_PLAN_ITEMS:
                notes.append(f"plan stopped at {MAX_PLAN_ITEMS} items; apply it and plan again")
                return True
        return False

    def _consider(
        self, base: str, rel: tuple[str, ...], st: os.stat_result, now: float, out: list[CleanItem]
    ) -> None:
        """Add a regular file or a symlink (the link itself, never its target) if a rule
        matches. Sockets, fifos and devices are never planned."""
        kind: ItemKind
        if stat.S_ISREG(st.st_mode):
            kind = "file"
        elif stat.S_ISLNK(st.st_mode):
            kind = "symlink"
        else:
            return
        rule = self._matching_rule("/".join(rel), st, now)
        if rule is None or len(out) >= MAX_PLAN_ITEMS:
            return
        path = os.path.join(base, *rel)
        ident = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        out.append(CleanItem(kind, path, *ident, root=base, label=rule.glob))

    def _matching_rule(self, rel: str, st: os.stat_result, now: float) -> CleanRule | None:
        """First rule whose glob matches (the name, or the relative path if the glob has a
        slash) and whose min_age_s and min_size_bytes the file meets."""
        name = os.path.basename(rel)
        for rule in self.rules:
            subject = rel if "/" in rule.glob else name
            if (
                fnmatch.fnmatchcase(subject, rule.glob)
                and now - st.st_mtime >= rule.min_age_s
                and st.st_size >= rule.min_size_bytes
            ):
                return rule
        return None

    def _docker_items(self, notes: list[str]) -> list[CleanItem]:
        if self.docker is None:
            notes.append("docker items are enabled but no Docker engine is connected")
            return []
        try:
            found = list(self.docker.list_cleanable(self.docker_kinds))
        except OpsMedicError as exc:
            notes.append(f"docker: {exc}; docker items left out of this plan")
            return []
        items: list[CleanItem] = []
        for raw in found:
            kind, ref = raw.get("kind"), raw.get("id")
            if kind in self.docker_kinds and ref:
                size = int(raw.get("size") or 0)
                items.append(CleanItem(kind, str(ref), size, label=str(raw.get("label") or "")))
        return items

    def view(self, plan: CleanPlan) -> dict[str, Any]:
        """The plan as shown to a model: at most max_items items, largest first."""
        return plan.view(self.max_items)

    # --- apply --------------------------------------------------------------------------

    def apply(self, plan: CleanPlan) -> CleanResult:
        """Delete exactly the items of `plan` that are unchanged and still inside a root.
        Raise Conflict for a plan that is too old or does not match its id."""
        if plan_id_of(plan.items) != plan.plan_id:
            raise Conflict(f"plan {plan.plan_id} does not match its items; make a new plan")
        age = self.clock() - plan.created_at
        if age > self.plan_ttl_s:
            raise Conflict(
                f"plan {plan.plan_id} is {age / 60:.0f} min old (plans last "
                f"{self.plan_ttl_s / 60:.0f} min); call clean_disk(action='plan') again"
            )
        real_roots = set(self._real_roots())
        result = CleanResult(plan_id=plan.plan_id)
        for item in plan.items:
            if item.kind in DOCKER_KINDS:
                outcome = self._apply_docker(item)
            else:
                outcome = self._apply_file(item, real_roots)
            if isinstance(outcome, tuple):
                result.skip(item, *outcome)
            else:
                result.deleted.append({"kind": item.kind, "path": item.path, "size": item.size})
                result.bytes_freed += outcome
        logger.info(
            "clean_disk plan %s: %d deleted, %d skipped, %d bytes freed",
            *(plan.plan_id, len(result.deleted), len(result.skipped), result.bytes_freed),
        )
        return result

    def _apply_file(self, item: CleanItem, real_roots: set[str]) -> int | _Skip:
        """Bytes freed, or why the item was skipped."""
        parent, name = os.path.split(item.path)
        if item.root not in real_roots or not is_within(parent, item.root):
            return "outside", "no longer under a configured clean root"
        try:
            real_parent = str(resolve_under_roots(parent, self.clean_roots, CLEAN_ROOTS))
        except (Refused, InvalidInput) as exc:
            return "outside", str(exc)
        if real_parent != parent:
            return "changed", f"its directory now resolves to {real_parent}"
        try:
            fd = _open_dir(item.root, Path(parent).relative_to(item.root).parts)
        except FileNotFoundError:
            return "missing", "its directory is gone"
        except OSError as exc:  # ELOOP/ENOTDIR: a directory became a symlink or a file
            return "changed", f"its directory changed ({exc.strerror or exc})"
        try:
            return _unlink_if_same(fd, name, item)
        finally:
            os.close(fd)

    def _apply_docker(self, item: CleanItem) -> int | _Skip:
        if self.docker is None or item.kind not in self.docker_kinds:
            return "error", "docker cleaning is not enabled or not connected"
        try:
            return max(0, int(self.docker.remove_cleanable(item.kind, item.path)))
        except Conflict as exc:
            return "changed", str(exc)
        except NotFound as exc:
            return "missing", str(exc)
        except OpsMedicError as exc:
            return "error", str(exc)


def _unlink_if_same(fd: int, name: str, item: CleanItem) -> int | _Skip:
    """Unlink `name` in directory `fd` if it is still the planned file (never follows it)."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing", "already gone"
    except OSError as exc:
        return "error", exc.strerror or str(exc)
    is_type = stat.S_ISLNK if item.kind == "symlink" else stat.S_ISREG
    planned = (item.size, item.mtime_ns, item.inode, item.dev)
    if not is_type(st.st_mode) or (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev) != planned:
        return "changed", "modified or replaced since the plan"
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        return "missing", "already gone"
    except OSError as exc:
        return "error", exc.strerror or str(exc)
    return item.size


def _open_dir(base: str, parts: Sequence[str]) -> int:
    """Open `base/parts...` one component at a time, refusing symlinks at every step
    (O_NOFOLLOW raises ELOOP/ENOTDIR), and return the directory's fd."""
    fd = os.open(base, _DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise OSError(f"unsafe path component {part!r}")
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False)
    except OSError:
        return None  # vanished while listing


def _outermost(roots: Sequence[str]) -> list[str]:
    """Drop roots nested in another root, so nothing is walked twice."""
    unique = sorted(set(roots), key=len)
    kept: list[str] = []
    for root in unique:
        if not any(is_within(root, k) for k in kept):
            kept.append(root)
    return kept
