"""Session fixtures backed by real services (see tests/services.py).

When ``python -m tests.services run -- pytest`` (``make test``) started the services, the
fixtures reuse them through the OPSMEDIC_TEST_* env vars; under a plain ``pytest`` each
fixture starts its own service on first use and stops it at session end. A service that
does not start fails the test with the service's log tail: these services are required.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import docker
import pymongo
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from docker.models.containers import Container

from mcp_server.store.base import Store, open_store
from tests.services import (
    DockerEngine,
    Dovecot,
    ImapAccess,
    MongoWire,
    Service,
    ServiceError,
    ensure_busybox_image,
    free_port,
)


def _start_or_fail(service: Service) -> Service:
    try:
        service.start()
        return service
    except ServiceError as exc:
        message = str(exc)
    service.stop(keep_dir=True)  # keep the log for a human to read
    pytest.fail(message, pytrace=False)


@contextlib.contextmanager
def _service_or_env(var: str, factory: type[Service]) -> Iterator[Service | None]:
    """Yield None when ``var`` names a running service, else a started service stopped later."""
    if os.environ.get(var):
        yield None
        return
    service = _start_or_fail(factory())
    try:
        yield service
    finally:
        service.stop()


# --- Docker -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """``unix://...`` URL of a private Docker engine; also exported as DOCKER_HOST."""
    with _service_or_env("OPSMEDIC_TEST_DOCKER_HOST", DockerEngine) as engine:
        url = cast(DockerEngine, engine).host if engine else os.environ["OPSMEDIC_TEST_DOCKER_HOST"]
        previous = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """``opsmedic-test/busybox:latest``: static busybox with every applet (sh, sleep, wget...)."""
    return ensure_busybox_image(docker_client)


class DockerEnv:
    """Runs throwaway busybox containers for one test and removes them afterwards."""

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.containers: list[Container] = []

    def run(
        self,
        name: str,
        command: str | list[str] | None = None,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Container:
        """Start a detached container named ``{name}-{6 hex}`` with ``network_mode="none"``.

        A string command runs under ``sh -c``; the default command sleeps for an hour.
        Extra keyword arguments go to ``docker.containers.run`` (e.g. ``restart_policy``).
        """
        if isinstance(command, str):
            command = ["sh", "-c", command]
        kwargs.setdefault("network_mode", "none")
        container = self.client.containers.run(
            kwargs.pop("image", self.image),
            command or ["sleep", "3600"],
            name=f"{name}-{uuid.uuid4().hex[:6]}",
            labels=labels or {},
            detach=True,
            **kwargs,
        )
        self.containers.append(container)
        return container

    def _get(self, container: Container | str) -> Container:
        if isinstance(container, str):
            mine = [c for c in self.containers if c.name.rsplit("-", 1)[0] == container]
            return mine[-1] if mine else self.client.containers.get(container)
        container.reload()
        return container

    def restart_count(self, container: Container | str) -> int:
        """Docker's RestartCount (restarts done by the engine's restart policy)."""
        return int(self._get(container).attrs.get("RestartCount", 0))

    def wait_status(
        self, container: Container | str, status: str, timeout: float = 10.0
    ) -> Container:
        """Poll until the container's status (running, exited, ...) equals ``status``."""
        deadline = time.monotonic() + timeout
        while True:
            current = self._get(container)
            if current.status == status:
                return current
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"container {current.name} is {current.status!r}, "
                    f"wanted {status!r} within {timeout} s"
                )
            time.sleep(0.05)

    def cleanup(self) -> None:
        for container in self.containers:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True, v=True)
        self.containers.clear()


@pytest.fixture
def docker_env(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[DockerEnv]:
    env = DockerEnv(docker_client, busybox_image)
    try:
        yield env
    finally:
        env.cleanup()


# --- MongoDB wire -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """``mongodb://127.0.0.1:PORT`` of a real MongoDB-wire server (SecantusDB)."""
    with _service_or_env("OPSMEDIC_TEST_MONGO_URL", MongoWire) as mongo:
        yield cast(MongoWire, mongo).url if mongo else os.environ["OPSMEDIC_TEST_MONGO_URL"]


# --- IMAP (Dovecot) -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def _imap_session() -> Iterator[ImapAccess]:
    with _service_or_env("OPSMEDIC_TEST_IMAP", Dovecot) as dovecot:
        if dovecot:
            yield cast(Dovecot, dovecot).imap
        else:
            host, _, port = os.environ["OPSMEDIC_TEST_IMAP"].rpartition(":")
            yield ImapAccess(host, int(port))


@pytest.fixture
def imap_server(_imap_session: ImapAccess) -> ImapAccess:
    """Dovecot on 127.0.0.1 (host, port, users {name: password}) with every INBOX emptied."""
    for user in _imap_session.users:
        _imap_session.clear(user)
    return _imap_session


# --- SMTP (aiosmtpd) ----------------------------------------------------------------------


class SmtpSink:
    """A real SMTP server on 127.0.0.1 that keeps what it receives, with fault injection."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self._refuse: list[int] = []  # one reply code per DATA to refuse
        self._drop = 0
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            if self._drop:
                self._drop -= 1
                # abort() marks the connection lost at once, so not even the reply goes out
                cast(asyncio.Transport, server.transport).abort()
                return "421 dropped"
            if self._refuse:
                return f"{self._refuse.pop(0)} try again later (injected)"
            raw = cast(bytes, envelope.original_content or envelope.content or b"")
            self.envelopes.append(envelope)
            self.messages.append(
                cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))
            )
        return "250 OK"

    def refuse_next(self, n: int = 1, code: int = 451) -> None:
        """Answer the next ``n`` DATA commands with ``code`` (4xx temporary, 5xx permanent)."""
        with self._lock:
            self._refuse.extend([code] * n)

    def drop_next(self, n: int = 1) -> None:
        """Close the connection without replying to the next ``n`` DATA commands."""
        with self._lock:
            self._drop += n

    def start(self) -> None:
        """Listen (again) on the same host and port."""
        if self._controller is None:
            self._controller = Controller(self, hostname=self.host, port=self.port)
            self._controller.start()

    def stop(self) -> None:
        """Stop listening; connections are refused until start()."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Poll until at least ``count`` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{len(self.messages)} messages after {timeout} s")
            time.sleep(0.02)
        return list(self.messages)


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# --- files --------------------------------------------------------------------------------


@pytest.fixture
def tmp_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty data dir, also exported as OPSMEDIC_DATA_DIR for this test."""
    data_dir = tmp_path / "opsmedic-data"
    data_dir.mkdir()
    monkeypatch.setenv("OPSMEDIC_DATA_DIR", str(data_dir))
    return data_dir


# --- stores -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "mongo"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL per test; a Mongo database is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store/opsmedic.db"
        return
    base = request.getfixturevalue("mongo_url")  # started only when a mongo test runs
    name = f"t_{uuid.uuid4().hex[:8]}"
    yield f"{base}/{name}"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(base)
    with client:
        client.drop_database(name)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
