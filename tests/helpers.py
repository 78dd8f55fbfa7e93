"""Small helpers shared by tests (fixtures live in conftest.py files)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_server.settings import Settings

REPO = Path(__file__).resolve().parent.parent
OPSMEDIC = [sys.executable, "-m", "mcp_server"]


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp, **overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without OPSMEDIC_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMEDIC_")}
    env.update(extra)
    return env


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


@contextmanager
def http_server(
    data_dir: Path, *args: str, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `opsmedic serve --http` as a real subprocess; yield (base_url, process)."""
    port = free_port()
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*OPSMEDIC, "serve", "--http", "--port", str(port), *args],
        env=clean_env(OPSMEDIC_DATA_DIR=str(data_dir), **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((data_dir / "server.log").read_text()[-3000:])
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=30)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def jsonrpc(method: str, params: dict[str, Any] | None = None, id_: int = 1) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}})


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a fresh self-signed certificate for 127.0.0.1; the
    client trusts only that certificate. Files are written under `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


class ManualClock:
    """A clock tests move by hand (`clock.now += timedelta(...)`): no waiting for backoff."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def swap(deps: Any, **parts: Any) -> None:
    """Replace typed services of a built server (e.g. approvals=FakeApprovals())."""
    deps.bind(dataclasses.replace(deps.services, **parts))
