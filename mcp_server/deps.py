"""Everything a tool, resource or prompt needs, built once per server and found via the context."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from mcp_server.core.duties import Duties
from mcp_server.core.events import EventBus
from mcp_server.safety.audit import Auditor, audit_keys_and_anchor
from mcp_server.safety.redaction import Redactor
from mcp_server.settings import Settings
from mcp_server.store.base import Store, open_store

if TYPE_CHECKING:
    from fastmcp import Context

    from mcp_server.services import Services


@dataclass
class Deps:
    settings: Settings
    store: Store
    redactor: Redactor
    auditor: Auditor
    bus: EventBus
    clock: Callable[[], float] = time.time
    #: How the server waits out policy delays (backoff); tests inject a fake that advances clock.
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    #: Background duties started by the lifespan: state, interval, last progress of each.
    duties: Duties = field(default_factory=Duties)
    #: clean_disk plans by id (they live 1 h; apply deletes exactly a plan)
    plans: dict[str, Any] = field(default_factory=dict)
    #: the dashboard/API routes once registered (web.routes.Web)
    web: Any = None
    #: Who holds leases in a shared store: unique per server, even several in one process
    #: (set from the instance name by build(); the hostname when built by hand).
    holder: str = field(default_factory=lambda: holder_id(socket.gethostname()))
    _users: int = 0
    _services: Services | None = None
    #: how many entered serving() (the HTTP app and an in-process runner share one life)
    serving_users: int = 0
    live: anyio.Event | None = None
    #: the audit head is being anchored (once per Deps, however many lifespans enter)
    anchoring: bool = False

    @property
    def services(self) -> Services:
        """The typed services (mcp_server.services), bound once by build_services()."""
        if self._services is None:  # pragma: no cover - a wiring bug, not user input
            raise RuntimeError("services are not built yet: call build_services(deps) first")
        return self._services

    @property
    def bound(self) -> Services | None:
        return self._services

    def bind(self, services: Services) -> None:
        self._services = services

    @property
    def instance(self) -> str:
        """OPSMEDIC_INSTANCE: the name incidents, audit entries and heartbeats carry."""
        return self.settings.instance

    @property
    def tasks(self) -> Duties:
        """name -> status text ("running", "stalled: ...", ...): the duties, as a mapping."""
        return self.duties

    async def start(self) -> None:
        """Open the store on first use. Paired with stop(); nested users share one store."""
        if self._users == 0:
            await self.store.open()
        self._users += 1

    async def stop(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self.store.close()

    @classmethod
    def build(cls, settings: Settings, store: Store | None = None) -> Deps:
        store = store or open_store(settings.resolved_store_url)
        redactor = Redactor(settings.secret_values())
        keys, anchor = audit_keys_and_anchor(settings)
        return cls(
            settings=settings,
            store=store,
            redactor=redactor,
            auditor=Auditor(store, redactor, keys, anchor, instance=settings.instance),
            bus=EventBus(store),
            holder=holder_id(settings.instance),
        )


def holder_id(instance: str) -> str:
    """A lease holder id: the instance name, the pid, and a nonce (two servers in one
    process, or two processes given the same instance name, still hold leases apart)."""
    return f"{instance}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def deps_of(ctx: Context) -> Deps:
    deps = ctx.lifespan_context.get("deps")
    if not isinstance(deps, Deps):  # pragma: no cover - a wiring bug, not user input
        raise RuntimeError("OpsMedic dependencies are missing from the server lifespan")
    return deps
