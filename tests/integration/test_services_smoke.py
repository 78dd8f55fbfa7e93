"""The real services behind the fixtures answer like the real thing."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from typing import Any

import pymongo
import pytest

from tests.conftest import DockerEnv, SmtpSink
from tests.services import ImapAccess


def _mail(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "opsmedic@example.test"
    msg["To"] = "ops@example.test"
    msg["Subject"] = subject
    msg.set_content("hello from the smoke test")
    return msg


def _send(smtp: SmtpSink, subject: str) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.send_message(_mail(subject))


def test_is_marked_integration(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integration") is not None


def test_container_exit_code_is_reported(docker_env: DockerEnv) -> None:
    container = docker_env.run("exit3", "echo up; exit 3", labels={"opsmedic.managed": "true"})
    assert container.wait(timeout=30)["StatusCode"] == 3
    exited = docker_env.wait_status(container, "exited")
    assert exited.attrs["State"]["ExitCode"] == 3
    assert exited.labels == {"opsmedic.managed": "true"}
    assert exited.attrs["HostConfig"]["NetworkMode"] == "none"
    assert b"up" in exited.logs()


def test_engine_restart_policy_is_counted(docker_env: DockerEnv) -> None:
    container = docker_env.run("flappy", "sleep 0.2; exit 1", restart_policy={"Name": "always"})
    deadline = time.monotonic() + 30
    while docker_env.restart_count(container) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert docker_env.restart_count("flappy") >= 1


def test_mongo_wire_insert_and_find(mongo_url: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_url, serverSelectionTimeoutMS=5000
    )
    with client:
        coll = client["smoke"]["docs"]
        coll.delete_many({})
        coll.insert_many([{"n": 1, "tag": "a"}, {"n": 2, "tag": "b"}])
        assert coll.find_one({"tag": "b"}, {"_id": 0}) == {"n": 2, "tag": "b"}
        assert coll.count_documents({}) == 2


def test_imap_append_then_fetch(imap_server: ImapAccess) -> None:
    assert imap_server.fetch_all("ops@example.test") == []
    raw = _mail("Re: [OpsMedic] incident 1").as_bytes()
    imap_server.append("ops@example.test", raw)
    fetched = imap_server.fetch_all("ops@example.test")
    assert len(fetched) == 1
    assert b"Subject: Re: [OpsMedic] incident 1" in fetched[0]
    assert imap_server.fetch_all("approver@example.test") == []


def test_smtp_keeps_received_messages(smtp_server: SmtpSink) -> None:
    _send(smtp_server, "first")
    [msg] = smtp_server.wait_for(1)
    assert msg["Subject"] == "first"
    assert smtp_server.envelopes[0].rcpt_tos == ["ops@example.test"]


def test_smtp_refuse_next_gives_a_temporary_error(smtp_server: SmtpSink) -> None:
    smtp_server.refuse_next(1, code=451)
    with pytest.raises(smtplib.SMTPDataError) as info:
        _send(smtp_server, "refused")
    assert info.value.smtp_code == 451
    _send(smtp_server, "accepted")
    assert [m["Subject"] for m in smtp_server.wait_for(1)] == ["accepted"]


def test_smtp_drop_next_disconnects(smtp_server: SmtpSink) -> None:
    smtp_server.drop_next(1)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        _send(smtp_server, "dropped")
    _send(smtp_server, "after the drop")
    assert [m["Subject"] for m in smtp_server.wait_for(1)] == ["after the drop"]


def test_smtp_stop_then_start_on_the_same_port(smtp_server: SmtpSink) -> None:
    port = smtp_server.port
    smtp_server.stop()
    with pytest.raises(ConnectionRefusedError):
        _send(smtp_server, "nobody home")
    smtp_server.start()
    assert smtp_server.port == port
    _send(smtp_server, "back")
    assert [m["Subject"] for m in smtp_server.wait_for(1)] == ["back"]
