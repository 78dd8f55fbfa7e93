"""A real multi-node Docker Swarm for tests and benches, in network namespaces.

Each node is a dockerd in its own network namespace (and UTS namespace, so each has its own
hostname); the "switch" is a bridge in a namespace of its own, so the host's network and
firewall never see the traffic. Addresses from 198.18.0.0/24 exist only inside these
namespaces (see /work/shared/RECIPES.md "A multi-node Docker Swarm"). Everything is torn down
by `close()`, also after a failed start: dockerds stopped by pid, leftover mounts lazily
unmounted, namespaces deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import psutil
import pytest

from tests.services import (
    _processes_mentioning,
    _terminate_all,
    _unmount_under,
    ensure_busybox_image,
    log_tail,
)

T = TypeVar("T")
SUBNET = "198.18.0"


class SwarmError(RuntimeError):
    pass


def wait_for(check: Callable[[], T | None], timeout: float, what: str, step: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; SwarmError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as exc:  # any client error just means "not yet"
            last = exc
        time.sleep(step)
    raise SwarmError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Node:
    index: int
    root: Path
    netns: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        return f"swnode{self.index}"

    @property
    def addr(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def host(self) -> str:
        return f"unix://{self.root}/d.sock"

    def client(self, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def start(self) -> None:
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        dockerd = (
            f"hostname {self.hostname} && exec dockerd --data-root={r}/data --exec-root={r}/exec "
            f"--pidfile={r}/d.pid --host={self.host} --iptables=false --ip6tables=false "
            "--bridge=none"
        )
        command = [
            "nsenter",
            f"--net=/var/run/netns/{self.netns}",
            "unshare",
            "--uts",
            "sh",
            "-c",
            dockerd,
        ]
        with (r / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise SwarmError(f"{self.hostname} exited: {log_tail(r / 'dockerd.log')}")
            with contextlib.closing(self.client(timeout=2)) as c:
                return bool(c.ping())

        try:
            wait_for(ready, 60, f"dockerd of {self.hostname}")
        except SwarmError as exc:
            raise SwarmError(f"{exc}\n{log_tail(r / 'dockerd.log')}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop this node's dockerd (by its pid) and what it spawned."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        _terminate_all(children, 5)
        _unmount_under(self.root / "exec")


@dataclass
class SwarmCluster:
    """`size` managers (3 by default) formed into one swarm; node 1 is where OpsMedic looks."""

    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="omsw-", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"om{os.getpid() % 100000}"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def start(self) -> SwarmCluster:
        try:
            self._network()
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                with contextlib.closing(node.client()) as c:
                    ensure_busybox_image(c)
            self._form()
        except BaseException:
            self.close()
            raise
        return self

    def _network(self) -> None:
        hub = f"{self.tag}hub"
        _ip("netns", "add", hub)
        self.namespaces.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for i in range(1, self.size + 1):
            ns = f"{self.tag}n{i}"
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip(
                "-n",
                hub,
                "link",
                "add",
                f"v{i}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _ip("-n", hub, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", hub, "link", "set", f"v{i}", "up")
            node = Node(i, self.root / f"n{i}", ns)
            _ip("-n", ns, "addr", "add", f"{node.addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.nodes.append(node)

    def _form(self) -> None:
        first = self.manager
        with contextlib.closing(first.client()) as c:
            c.swarm.init(advertise_addr=first.addr, listen_addr=f"{first.addr}:2377")
            token = c.swarm.attrs["JoinTokens"]["Manager"]
        for node in self.nodes[1:]:
            with contextlib.closing(node.client()) as c:
                c.swarm.join(
                    remote_addrs=[f"{first.addr}:2377"],
                    join_token=token,
                    advertise_addr=node.addr,
                    listen_addr=f"{node.addr}:2377",
                )
        wait_for(lambda: self.ready_nodes() == self.size, 60, "every node Ready")

    def ready_nodes(self) -> int:
        with contextlib.closing(self.manager.client(timeout=5)) as c:
            return sum(1 for n in c.nodes.list() if n.attrs["Status"]["State"] == "ready")

    def api(self, timeout: int = 30) -> docker.APIClient:
        return docker.APIClient(base_url=self.manager.host, timeout=timeout)

    def create_service(
        self,
        name: str,
        command: list[str],
        replicas: int = 2,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> str:
        """A replicated busybox service; returns its id."""
        with contextlib.closing(self.manager.client()) as c:
            svc = c.services.create(
                "opsmedic-test/busybox:latest",
                command=command,
                name=name,
                mode=docker.types.ServiceMode("replicated", replicas=replicas),
                labels=labels or {},
                **kwargs,
            )
            return str(svc.id)

    def update_command(self, name: str, command: list[str]) -> None:
        """A new spec (what a deploy does): the service's own update config applies."""
        with contextlib.closing(self.manager.client()) as c:
            c.services.get(name).update(command=command)

    def remove_services(self) -> None:
        with contextlib.closing(self.manager.client()) as c:
            for svc in c.services.list():
                with contextlib.suppress(docker.errors.APIError):
                    svc.remove()

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        # containerd shims detach from their dockerd (a SIGKILLed node leaves them running)
        _terminate_all(_processes_mentioning(str(self.root)), 5)
        _unmount_under(self.root)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def can_run_swarm() -> str | None:
    """Why a swarm cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("dockerd", "nsenter", "unshare", "ip", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed; run scripts/install-deps.sh"
    return None


@contextlib.contextmanager
def running_swarm(size: int = 3) -> Iterator[SwarmCluster]:
    cluster = SwarmCluster(size=size).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    """One 3-manager swarm for the whole session (skipped where namespaces cannot be made)."""
    why = can_run_swarm()
    if why:
        pytest.skip(f"a swarm cannot run here: {why}")
    with running_swarm() as cluster:
        yield cluster
