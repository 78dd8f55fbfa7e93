"""Real throwaway services for the test suite: a Docker engine, a MongoDB-wire server, Dovecot.

Each service lives under its own temp dir, listens on loopback or a unix socket only, is
ready when a real client call succeeds (polled against a deadline) and is stopped by pid
(SIGTERM, then SIGKILL), together with every process it spawned.

As a CLI, ``python -m tests.services run -- <command...>`` starts all three in parallel,
exports ``OPSMEDIC_TEST_DOCKER_HOST``, ``OPSMEDIC_TEST_MONGO_URL``, ``OPSMEDIC_TEST_IMAP``
(host:port) and ``OPSMEDIC_TEST_DOVECOT_DIR``, runs the command, always stops everything
and exits with the command's exit code (125 when a service fails to start).
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import io
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil
import pymongo

logger = logging.getLogger(__name__)

BUSYBOX_IMAGE = "opsmedic-test/busybox:latest"
IMAP_USERS = {"ops@example.test": "secret", "approver@example.test": "secret"}
START_FAILED_EXIT = 125


class ServiceError(RuntimeError):
    """A service did not start or did not answer; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _processes_mentioning(marker: str) -> list[psutil.Process]:
    """Processes whose command line names our private temp dir (e.g. containerd shims)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if marker in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


def _terminate_all(procs: Sequence[psutil.Process], timeout: float) -> None:
    """SIGTERM every process, wait up to ``timeout`` seconds, SIGKILL the survivors."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything a killed dockerd left mounted below ``root``."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@dataclass
class Service:
    """Common life cycle: spawn one daemon under a private temp dir, poll it, stop it."""

    name: str = "service"
    ready_timeout: float = 30.0
    stop_timeout: float = 20.0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="om-", dir="/tmp")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """One readiness probe; may raise. Called until it returns True or time runs out."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files before the daemon starts."""

    def after_start(self) -> None:
        """Work to do once the daemon answers (e.g. import an image)."""

    def start(self) -> None:
        """Start the daemon and wait until it answers; ServiceError with the log tail if not."""
        self.prepare()
        command = self.command()
        if shutil.which(command[0]) is None:
            raise ServiceError(f"{command[0]} is not installed; run scripts/install-deps.sh")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # own session: a terminal ^C must not kill it
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        self.after_start()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        last: object = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.error(f"exited with code {self.proc.returncode} while starting")
            try:
                if self.ready():
                    return
            except Exception as exc:  # any client error just means "not yet"
                last = exc
            time.sleep(0.1)
        raise self.error(f"not ready after {self.ready_timeout:.0f} s (last probe: {last})")

    def error(self, what: str) -> ServiceError:
        return ServiceError(f"{self.name} {what}; log {self.log_path}:\n{log_tail(self.log_path)}")

    def before_stop(self) -> None:
        """Tidy up through the service's own API before it is signalled."""

    def _stop_main(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the daemon, SIGKILL it after ``stop_timeout``, then its leftover children."""
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM; killing it", self.name)
                proc.kill()
                proc.wait(timeout=10)
        _terminate_all(children, 5)

    def stop(self, keep_dir: bool = False) -> None:
        """Stop the daemon and everything it spawned, then delete the temp dir."""
        if self.proc is not None:
            try:
                self.before_stop()
            except Exception:
                logger.warning("%s: tidy-up before stop failed", self.name, exc_info=True)
            self._stop_main(self.proc)
            self.proc = None
        _terminate_all(_processes_mentioning(str(self.root)), 5)
        _unmount_under(self.root)
        if not keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class DockerEngine(Service):
    """A private dockerd that never touches host networking; containers use ``--network none``."""

    name: str = "dockerd"
    ready_timeout: float = 60.0

    @property
    def host(self) -> str:
        return f"unix://{self.root}/d.sock"  # /tmp/om-XXXXXXXX/d.sock stays far below 107 bytes

    def command(self) -> list[str]:
        r = self.root  # no iptables and no docker0 bridge: the host's network stays untouched
        return [
            "dockerd", f"--data-root={r}/data", f"--exec-root={r}/exec",
            f"--pidfile={r}/dockerd.pid", f"--host={self.host}",
            "--iptables=false", "--ip6tables=false", "--bridge=none",
        ]  # fmt: skip

    def client(self, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def ready(self) -> bool:
        with contextlib.closing(self.client(timeout=2)) as client:
            return bool(client.ping())

    def after_start(self) -> None:
        with contextlib.closing(self.client()) as client:
            ensure_busybox_image(client)

    def before_stop(self) -> None:
        with contextlib.closing(self.client(timeout=10)) as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True, v=True)


def busybox_rootfs_tar() -> bytes:
    """A root filesystem tarball: static busybox in /bin plus a symlink for every applet."""
    binary = Path(shutil.which("busybox") or "/bin/busybox")
    applets = subprocess.run([binary, "--list"], check=True, capture_output=True, text=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(binary, arcname="bin/busybox")
        for applet in sorted(set(applets.stdout.split()) - {"busybox"}):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    return buf.getvalue()


def ensure_busybox_image(client: docker.DockerClient) -> str:
    """Import ``opsmedic-test/busybox:latest`` from busybox-static unless it exists already."""
    try:
        client.images.get(BUSYBOX_IMAGE)
    except docker.errors.ImageNotFound:
        repository, tag = BUSYBOX_IMAGE.split(":")
        client.api.import_image_from_data(busybox_rootfs_tar(), repository=repository, tag=tag)
    return BUSYBOX_IMAGE


@dataclass
class MongoWire(Service):
    """SecantusDB speaking the MongoDB wire protocol on 127.0.0.1."""

    name: str = "secantus"
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", str(self.root / "data"), "--log-level", "WARNING",
        ]  # fmt: skip

    def ready(self) -> bool:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500
        )
        with client:
            return bool(client.admin.command("ping").get("ok"))


@dataclass
class ImapAccess:
    """Talk to a running IMAP server as the test users (APPEND / FETCH / clear)."""

    host: str
    port: int
    users: dict[str, str] = field(default_factory=lambda: dict(IMAP_USERS))

    @contextlib.contextmanager
    def session(self, user: str, mailbox: str = "INBOX") -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection with ``mailbox`` selected."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            conn.login(user, self.users[user])
            conn.select(mailbox)
            yield conn
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                conn.logout()

    def append(self, user: str, raw: bytes, mailbox: str = "INBOX") -> None:
        """Deliver ``raw`` (an RFC 5322 message) into ``user``'s mailbox, as a mail client would."""
        with self.session(user, mailbox) as conn:
            typ, data = conn.append(mailbox, "", imaplib.Time2Internaldate(time.time()), raw)
            if typ != "OK":
                raise ServiceError(f"IMAP APPEND for {user} failed: {data!r}")

    def fetch_all(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """Every message in the mailbox as raw bytes, oldest first."""
        with self.session(user, mailbox) as conn:
            _, data = conn.search(None, "ALL")
            messages: list[bytes] = []
            for num in data[0].split():
                _, parts = conn.fetch(num, "(BODY.PEEK[])")
                messages.extend(p[1] for p in parts if isinstance(p, tuple))
            return messages

    def clear(self, user: str, mailbox: str = "INBOX") -> None:
        """Delete every message in the mailbox."""
        with self.session(user, mailbox) as conn:
            _, data = conn.search(None, "ALL")
            if data[0]:
                conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                conn.expunge()


@dataclass
class Dovecot(Service):
    """Dovecot IMAP on 127.0.0.1: plaintext auth, passwd-file users, maildirs in the temp dir."""

    name: str = "dovecot"
    port: int = field(default_factory=free_port)

    @property
    def imap(self) -> ImapAccess:
        return ImapAccess("127.0.0.1", self.port)

    def _check_accounts(self) -> None:
        if os.geteuid() != 0:
            raise ServiceError("the Dovecot test server must start as root (it drops to vmail)")
        try:
            pwd.getpwnam("vmail")
        except KeyError as exc:
            raise ServiceError("user vmail is missing; run scripts/install-deps.sh") from exc

    def prepare(self) -> None:
        self._check_accounts()
        r = self.root
        r.chmod(0o755)  # dovecot's unprivileged login/auth processes must reach base_dir
        (r / "mail").mkdir()
        shutil.chown(r / "mail", "vmail", "vmail")
        users = "".join(f"{name}:{{PLAIN}}{pw}\n" for name, pw in IMAP_USERS.items())
        (r / "users").write_text(users)
        (r / "dovecot.conf").write_text(f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
log_path = {self.log_path}
instance_name = {r.name}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{r}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {r}/users
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={r}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")

    def command(self) -> list[str]:
        return ["dovecot", "-F", "-c", str(self.root / "dovecot.conf")]

    def ready(self) -> bool:
        with self.imap.session(next(iter(IMAP_USERS))):
            return True


def _start_all(services: Sequence[Service]) -> list[tuple[Service, BaseException]]:
    """Start services in parallel threads; return the ones that failed with their errors."""
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = [(svc, pool.submit(svc.start)) for svc in services]
        return [(svc, exc) for svc, fut in futures if (exc := fut.exception()) is not None]


def _stop_all(services: Sequence[Service]) -> None:
    """Stop services in parallel; a failure to stop one never keeps the others running."""

    def stop(svc: Service) -> None:
        try:
            svc.stop()
        except Exception:
            logger.exception("failed to stop %s", svc.name)

    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        list(pool.map(stop, services))


class _Signalled(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, _frame: object) -> None:
    # ignore repeats so a second ^C cannot interrupt the clean-up the first one started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Signalled(signum)


def _run_child(command: Sequence[str], env: dict[str, str]) -> int:
    """Run the command; forward SIGINT/SIGTERM to it and return 128+signal in that case."""
    child = subprocess.Popen(list(command), env=env)
    try:
        return child.wait()
    except _Signalled as sig:
        child.send_signal(sig.signum)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return 128 + sig.signum


def run_with_services(command: Sequence[str]) -> int:
    """Start docker, mongo and dovecot, run ``command`` with their env vars, stop them all."""
    docker_engine, mongo, dovecot = DockerEngine(), MongoWire(), Dovecot()
    services: list[Service] = [docker_engine, mongo, dovecot]
    handlers: list[Callable[[int, Any], Any] | int | None] = [
        signal.signal(s, _raise_signalled) for s in (signal.SIGINT, signal.SIGTERM)
    ]
    try:
        failed = _start_all(services)
        for svc, exc in failed:
            print(f"tests.services: {svc.name} failed to start: {exc}", file=sys.stderr)
        if failed:
            return START_FAILED_EXIT
        env = dict(os.environ)
        env.update(
            OPSMEDIC_TEST_DOCKER_HOST=docker_engine.host,
            OPSMEDIC_TEST_MONGO_URL=mongo.url,
            OPSMEDIC_TEST_IMAP=f"127.0.0.1:{dovecot.port}",
            OPSMEDIC_TEST_DOVECOT_DIR=str(dovecot.root),
        )
        return _run_child(command, env)
    except _Signalled as sig:
        return 128 + sig.signum
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(services)
        for signum, handler in zip((signal.SIGINT, signal.SIGTERM), handlers, strict=True):
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start every service, run a command, stop everything")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command [args...]")
    args = parser.parse_args(argv)
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("run needs a command after --")
    logging.basicConfig(level=logging.WARNING, format="tests.services: %(message)s")
    return run_with_services(command)


if __name__ == "__main__":
    sys.exit(main())
