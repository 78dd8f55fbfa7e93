"""clean_disk against real files in tmp_path: plan exactly, delete exactly, never escape a root."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mcp_server.backends.diskclean import CleanPlan, DiskPlanner, plan_id_of
from mcp_server.errors import Conflict, InvalidInput, NotFound, Refused, Unavailable
from mcp_server.settings import CleanRule, CleanSettings, Settings

DAY = 86400.0
RULE = CleanRule(glob="*.log*", min_age_s=7 * DAY, min_size_bytes=0)


def make_file(path: Path, data: bytes = b"x" * 100, age_days: float = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - age_days * DAY
    os.utime(path, (old, old))
    return path


def snapshot(tree: Path) -> dict[str, str]:
    """Every entry under `tree` (without following links) with a content hash."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(tree, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(tree))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    c = tmp_path / "canary"
    make_file(c / "app.log", b"precious log")
    make_file(c / "sub" / "a.log", b"precious too")
    make_file(c / "b.log.1", b"and this")
    return c


def planner(*roots: Path, **kw: Any) -> DiskPlanner:
    kw.setdefault("rules", [RULE])
    return DiskPlanner([str(r) for r in roots], **kw)


def paths(plan: CleanPlan) -> set[str]:
    return {item.path for item in plan.items}


def test_plan_then_apply_deletes_exactly_the_plan(root: Path) -> None:
    old = [make_file(root / "a.log"), make_file(root / "x" / "y" / "b.log.2", b"z" * 7)]
    keep = [
        make_file(root / "new.log", age_days=1),  # too young
        make_file(root / "data.db"),  # glob does not match
    ]
    (root / "emptydir").mkdir()
    p = planner(root)
    plan = p.plan()
    assert paths(plan) == {str(f) for f in old}
    assert plan.total_bytes == 107 and len(plan.plan_id) == 16
    result = p.apply(plan)
    assert result.bytes_freed == 107 and not result.skipped
    assert {d["path"] for d in result.deleted} == {str(f) for f in old}
    assert all(not f.exists() for f in old) and all(f.exists() for f in keep)
    assert (root / "emptydir").is_dir() and (root / "x" / "y").is_dir()  # dirs never removed


def test_rules_min_size_and_path_globs(root: Path) -> None:
    make_file(root / "small.log", b"x")
    big = make_file(root / "big.log", b"x" * 2000)
    cache = make_file(root / "cache" / "blob.bin")
    make_file(root / "other" / "blob.bin")
    rules = [CleanRule(glob="*.log", min_size_bytes=1000), CleanRule(glob="cache/*.bin")]
    plan = planner(root, rules=rules).plan()
    assert paths(plan) == {str(big), str(cache)}
    assert {i.label for i in plan.items} == {"*.log", "cache/*.bin"}


def test_plan_id_is_stable_and_tracks_changes(root: Path) -> None:
    f = make_file(root / "a.log")
    p = planner(root)
    first = p.plan()
    assert p.plan().plan_id == first.plan_id
    with f.open("ab") as fh:
        fh.write(b"more")
    assert p.plan().plan_id != first.plan_id
    assert plan_id_of(first.items) == first.plan_id


def test_plan_round_trips_and_a_tampered_plan_is_refused(root: Path) -> None:
    make_file(root / "a.log")
    plan = planner(root).plan()
    data = plan.to_dict()
    assert CleanPlan.from_dict(data) == plan
    data["items"][0]["path"] = "/etc/passwd"
    with pytest.raises(Conflict, match="does not match"):
        CleanPlan.from_dict(data)
    with pytest.raises(Conflict, match="malformed"):
        CleanPlan.from_dict({"plan_id": "x"})
    plan.items[0] = replace(plan.items[0], path="/etc/passwd")
    with pytest.raises(Conflict):
        planner(root).apply(plan)


def test_file_modified_after_plan_is_skipped(root: Path) -> None:
    grown = make_file(root / "grown.log")
    touched = make_file(root / "touched.log")
    p = planner(root)
    plan = p.plan()
    with grown.open("ab") as fh:
        fh.write(b"new line\n")
    os.utime(touched, None)  # same size, new mtime
    result = p.apply(plan)
    assert {(s["path"], s["reason"]) for s in result.skipped} == {
        (str(grown), "changed"),
        (str(touched), "changed"),
    }
    assert grown.exists() and touched.exists() and result.bytes_freed == 0


def test_file_replaced_by_a_new_inode_is_skipped(root: Path) -> None:
    f = make_file(root / "a.log", b"original!")
    p = planner(root)
    plan = p.plan()
    st = f.stat()
    tmp = make_file(root / "replacement.tmp", b"imposter!")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime, new inode
    os.replace(tmp, f)
    result = p.apply(plan)
    assert [(s["path"], s["reason"]) for s in result.skipped] == [(str(f), "changed")]
    assert f.read_bytes() == b"imposter!"


def test_file_gone_before_apply_is_missing(root: Path) -> None:
    f = make_file(root / "d" / "a.log")
    p = planner(root)
    plan = p.plan()
    f.unlink()
    assert p.apply(plan).skipped[0]["reason"] == "missing"
    f.parent.rmdir()
    assert p.apply(plan).skipped[0]["reason"] == "missing"


def test_traversal_and_outside_roots_are_refused(root: Path, canary: Path) -> None:
    p = planner(root)
    with pytest.raises(Refused, match=r"\.\."):
        p.plan(str(root / ".." / "canary"))
    with pytest.raises(Refused) as err:
        p.plan(str(canary))
    assert str(root) in str(err.value) and "OPSMEDIC_CLEAN_ROOTS" in str(err.value)
    with pytest.raises(Refused):
        p.plan("/etc")
    with pytest.raises(InvalidInput):
        p.plan("relative/dir")
    with pytest.raises(Refused, match="OPSMEDIC_CLEAN_ROOTS"):
        DiskPlanner([], [RULE]).plan()


def test_root_param_narrows_to_a_subtree(root: Path) -> None:
    inside = make_file(root / "sub" / "a.log")
    make_file(root / "b.log")
    plan = planner(root).plan(str(root / "sub"))
    assert paths(plan) == {str(inside)} and plan.roots == [str(root / "sub")]
    assert planner(root).apply(plan).deleted[0]["path"] == str(inside)


def test_symlinks_out_of_the_root_are_never_followed(root: Path, canary: Path) -> None:
    before = snapshot(canary)
    make_file(root / "real.log")
    (root / "dirlink").symlink_to(canary, target_is_directory=True)
    (root / "old.log").symlink_to(canary / "app.log")  # matches the glob itself
    os.utime(root / "old.log", (0, 0), follow_symlinks=False)
    p = planner(root)
    plan = p.plan()
    canary_inodes = {os.lstat(canary / rel).st_ino for rel in before}
    assert not any(str(canary) in i.path or "dirlink/" in i.path for i in plan.items)
    assert not {i.inode for i in plan.items} & canary_inodes
    kinds = {Path(i.path).name: i.kind for i in plan.items}
    assert kinds == {"real.log": "file", "old.log": "symlink"}
    result = p.apply(plan)
    assert not result.skipped
    assert not (root / "old.log").is_symlink()  # the link went, never its target
    assert snapshot(canary) == before


def test_root_that_is_itself_a_symlink_out_is_refused(root: Path, canary: Path) -> None:
    (root / "escape").symlink_to(canary, target_is_directory=True)
    with pytest.raises(Refused, match="symlink"):
        planner(root).plan(str(root / "escape"))


@pytest.mark.parametrize("swap_to", ["canary", "inside"])
def test_directory_swapped_for_symlink_between_plan_and_apply(
    root: Path, canary: Path, tmp_path: Path, swap_to: str
) -> None:
    make_file(root / "sub" / "a.log")
    make_file(root / "sub" / "deeper" / "c.log")
    p = planner(root)
    plan = p.plan()
    assert len(plan.items) == 2
    before = snapshot(canary)
    os.rename(root / "sub", tmp_path / "moved-away")
    if swap_to == "canary":
        make_file(canary / "deeper" / "c.log", b"canary deep")
        before = snapshot(canary)
        (root / "sub").symlink_to(canary, target_is_directory=True)
    else:
        make_file(root / "elsewhere" / "a.log")
        (root / "sub").symlink_to(root / "elsewhere", target_is_directory=True)
    result = p.apply(plan)
    assert not result.deleted and len(result.skipped) == 2
    expected = "outside" if swap_to == "canary" else "changed"
    assert {s["reason"] for s in result.skipped} == {expected}
    assert snapshot(canary) == before
    assert (tmp_path / "moved-away" / "a.log").exists()


def test_fifos_and_sockets_are_never_planned(root: Path) -> None:
    os.mkfifo(root / "pipe.log")
    os.utime(root / "pipe.log", (0, 0))
    assert planner(root).plan().items == []


def test_nested_roots_are_walked_once_and_missing_roots_noted(root: Path, tmp_path: Path) -> None:
    f = make_file(root / "inner" / "a.log")
    plan = planner(root, root / "inner", tmp_path / "nope").plan()
    assert [i.path for i in plan.items] == [str(f)]
    assert any("nope" in note for note in plan.notes)


def test_view_is_bounded_but_the_plan_keeps_everything(root: Path) -> None:
    for n in range(5):
        make_file(root / f"f{n}.log", b"x" * (n + 1))
    p = planner(root, max_items=2)
    plan = p.plan()
    view = p.view(plan)
    assert len(plan.items) == 5 and view["total_items"] == 5 and view["total_bytes"] == 15
    assert [i["size"] for i in view["items"]] == [5, 4] and view["more_items"] == 3
    assert plan.plan_id in view["next"]


def test_old_plans_expire(root: Path) -> None:
    make_file(root / "a.log")
    now = [time.time()]
    p = planner(root, clock=lambda: now[0], plan_ttl_s=600)
    plan = p.plan()
    now[0] += 601
    with pytest.raises(Conflict, match="plan"):
        p.apply(plan)


def test_items_outside_current_roots_are_skipped(root: Path, tmp_path: Path) -> None:
    f = make_file(root / "a.log")
    plan = planner(root).plan()
    other = tmp_path / "other"
    other.mkdir()
    result = planner(other).apply(plan)
    assert result.skipped[0]["reason"] == "outside" and f.exists()


# --- docker items through a fake (the real engine is covered by the docker backend) ------


class FakeDocker:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = [
            {"kind": "docker_image", "id": "sha256:aaa", "size": 1000, "label": "<none>"},
            {"kind": "docker_container", "id": "c1", "size": 50, "label": "old-job"},
            {"kind": "build_cache", "id": "bc1", "size": 7, "label": "cache"},
        ]
        self.removed: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}
        self.list_error: Exception | None = None

    def list_cleanable(self, kinds: Collection[str]) -> Iterable[Mapping[str, Any]]:
        if self.list_error:
            raise self.list_error
        return [i for i in self.items if i["kind"] in kinds]

    def remove_cleanable(self, kind: str, ref: str) -> int:
        if ref in self.fail:
            raise self.fail[ref]
        self.removed.append((kind, ref))
        return next(int(i["size"]) for i in self.items if i["id"] == ref)


def test_docker_items_are_planned_and_removed_through_the_cleaner(root: Path) -> None:
    make_file(root / "a.log")
    docker = FakeDocker()
    docker.fail = {"c1": Conflict("container c1 is running now")}
    p = planner(root, docker=docker, docker_kinds=["docker_image", "docker_container"])
    plan = p.plan()
    assert {(i.kind, i.path) for i in plan.items} == {
        ("file", str(root / "a.log")),
        ("docker_image", "sha256:aaa"),
        ("docker_container", "c1"),
    }
    assert all(i.kind == "file" for i in p.plan(str(root)).items)  # a root means files only
    result = p.apply(plan)
    assert docker.removed == [("docker_image", "sha256:aaa")]
    assert result.bytes_freed == 1100
    assert [(s["path"], s["reason"]) for s in result.skipped] == [("c1", "changed")]
    docker.fail = {"sha256:aaa": NotFound("gone"), "c1": Unavailable("engine down")}
    assert {s["reason"] for s in p.apply(plan).skipped} == {"missing", "error"}


def test_docker_unavailable_while_planning_still_plans_files(root: Path) -> None:
    make_file(root / "a.log")
    docker = FakeDocker()
    docker.list_error = Unavailable("docker engine: connection refused")
    plan = planner(root, docker=docker, docker_kinds=["build_cache"]).plan()
    assert [i.kind for i in plan.items] == ["file"]
    assert any("connection refused" in n for n in plan.notes)


def test_from_settings_maps_docker_flags(root: Path) -> None:
    clean = CleanSettings(docker_build_cache=True, max_items=9)
    settings = Settings(clean_roots=[str(root)], clean=clean)
    p = DiskPlanner.from_settings(settings, docker=FakeDocker())
    assert p.docker_kinds == ("build_cache",) and p.max_items == 9
    with pytest.raises(InvalidInput):
        DiskPlanner([str(root)], [RULE], docker_kinds=["volumes"])
