"""The disk planner's view of Docker: list and remove leftovers, re-checking before removal.

The planner is synchronous and runs in a worker thread; the engine is async. This adapter
calls back into the event loop (anyio.from_thread) for each engine call.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import anyio.from_thread

from mcp_server.backends.docker.engine import DockerEngine
from mcp_server.errors import Conflict, NotFound


class DockerCleanerAdapter:
    def __init__(self, engine: DockerEngine, selector: str) -> None:
        self.engine = engine
        self.selector = selector  # the policy's: containers matching it are never offered

    def list_cleanable(self, kinds: Collection[str]) -> Iterable[Mapping[str, Any]]:
        items: list[dict[str, Any]] = []
        if "docker_image" in kinds:
            for img in anyio.from_thread.run(self.engine.dangling_images):
                items.append(_row("docker_image", img.id, img.size_bytes, img.name))
        if "docker_container" in kinds:
            found = anyio.from_thread.run(self.engine.stopped_unmanaged_containers, self.selector)
            for box in found:
                items.append(_row("docker_container", box.id, box.size_bytes, box.name))
        if "build_cache" in kinds:
            size = anyio.from_thread.run(self.engine.build_cache_bytes)
            if size:
                items.append(_row("build_cache", "build-cache", size, "unused build cache"))
        return items

    def remove_cleanable(self, kind: str, ref: str) -> int:
        """Remove one planned item if it is still what was planned; bytes freed."""
        now = {str(i["id"]): int(i["size"]) for i in self.list_cleanable([kind])}
        if ref not in now:
            raise NotFound(
                f"{kind} {ref} is gone or no longer safe to remove (in use, running, or managed)"
            )
        if kind == "docker_image":
            anyio.from_thread.run(self.engine.remove_image, ref)
        elif kind == "docker_container":
            anyio.from_thread.run(self.engine.remove_container, ref)
        elif kind == "build_cache":
            return int(anyio.from_thread.run(self.engine.prune_build_cache))
        else:
            raise Conflict(f"unknown docker item kind {kind!r}")
        return now[ref]


def _row(kind: str, ident: str, size: int, label: str) -> dict[str, Any]:
    return {"kind": kind, "id": ident, "size": size, "label": label}
