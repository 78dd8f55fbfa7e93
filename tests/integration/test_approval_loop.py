"""People in the loop, end to end: a real managed container, aiosmtpd as SMTP, Dovecot as IMAP.

Incident -> approval mail at the SMTP server -> the test replies as a mail client would
(quoting the original, In-Reply-To) by APPENDing to the IMAP inbox -> OpsMedic reads it ->
the container is restarted exactly once -> the thread gets the result. Then every kind of
bad reply is rejected, audited, and restarts nothing.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import anyio
import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus
from tests.helpers import make_settings

MANAGED = {"opsmedic.managed": "true"}
CRASH_ONCE = "if [ -f /ran ]; then sleep 3600; else touch /ran; sleep 1; exit 3; fi"
OPS = "ops@example.test"
APPROVER = "approver@example.test"


@pytest.fixture
async def loop_server(tmp_path, docker_host, smtp_server, imap_server):
    settings = make_settings(
        tmp_path,
        mode="heal",
        approvers=[APPROVER],
        policy={"approve": ["restart"], "verify_stable_s": 1.0},
        smtp={"host": smtp_server.host, "port": smtp_server.port, "from": OPS},
        imap={"host": imap_server.host, "port": imap_server.port, "username": OPS,
              "password": imap_server.users[OPS], "poll_s": 1.0},
        notify={"to": ["oncall@example.test"]},
    )  # fmt: skip
    deps = Deps.build(settings)
    await deps.start()
    async with Client(create_server(settings, deps)):
        yield deps
    await deps.stop()


def reply_to(original: EmailMessage, body: str, sender: str = APPROVER) -> bytes:
    """What a mail client sends: Re: subject, In-Reply-To/References, the original quoted."""
    quoted = "\n".join(
        "> " + line for line in original.get_body(("plain",)).get_content().splitlines()
    )
    msg = EmailMessage()
    msg["From"] = f"The Approver <{sender}>"
    msg["To"] = original["Reply-To"]
    msg["Subject"] = "Re: " + str(original["Subject"])
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="client.example.test")
    msg["In-Reply-To"] = original["Message-ID"]
    msg["References"] = f"{original.get('References', '')} {original['Message-ID']}".strip()
    msg.set_content(f"{body}\n\nOn {original['Date']}, OpsMedic wrote:\n{quoted}\n")
    return bytes(msg)


async def _until(predicate, timeout=30.0):
    with anyio.fail_after(timeout):
        while not (value := await predicate()):
            await anyio.sleep(0.1)
    return value


def _request(smtp_server) -> EmailMessage:
    found = [m for m in smtp_server.messages if "approve restart" in str(m["Subject"])]
    return found[-1]


async def _crash_and_wait_for_request(deps, docker_env, smtp_server):
    box = docker_env.run("pay", CRASH_ONCE, labels=MANAGED)
    target = f"container:{box.name}"

    async def asked():
        return any("approve restart" in str(m["Subject"]) for m in smtp_server.messages)

    await _until(asked)
    inc = next(i for i in await deps.store.list_incidents(limit=20) if i.target == target)
    assert inc.status == IncidentStatus.awaiting_approval
    return box, target, inc


def _restarts(audit, target):
    return [e for e in audit if e.tool == "action:restart" and e.target == target
            and e.outcome == "started"]  # fmt: skip


async def test_full_loop_restarts_exactly_once(loop_server, docker_env, smtp_server, imap_server):
    deps = loop_server
    box, target, inc = await _crash_and_wait_for_request(deps, docker_env, smtp_server)
    request = _request(smtp_server)
    assert request["To"] == APPROVER and "+" in request["Reply-To"]
    assert target in request.get_body(("plain",)).get_content()
    raw = reply_to(request, "APPROVE\nGo ahead.")
    imap_server.append(OPS, raw)

    async def resolved():
        got = await deps.store.get_incident(inc.id)
        return got is not None and got.status == IncidentStatus.resolved

    await _until(resolved)
    assert docker_env._get(box).status == "running"
    audit = await deps.store.audit_entries()
    assert len(_restarts(audit, target)) == 1
    assert any(e.tool == "approval:reply" and e.outcome == "approved" for e in audit)
    # the result goes into the same thread
    root = f"<opsmedic-incident-{inc.id}@example.test>"

    def reported():
        return [m for m in smtp_server.messages if "Restarted" in str(m["Subject"])]

    await _until(lambda: _async(reported()))
    assert root in str(reported()[0]["References"])
    # the same reply again (a client resending it) is handled once and rejected as reused
    imap_server.append(OPS, raw.replace(b"Message-ID: <", b"Message-ID: <again-"))

    async def reused():
        entries = await deps.store.audit_entries()
        return [e for e in entries if e.tool == "approval:reply" and "reused" in str(e.args)]

    await _until(reused)
    assert len(_restarts(await deps.store.audit_entries(), target)) == 1


async def _async(value):
    return value


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("forged", "bad_mac"),
        ("not_approver", "not_approver"),
        ("quoted_only", "decision_only_in_quote"),
    ],
)
async def test_bad_replies_are_rejected_and_audited(
    loop_server, docker_env, smtp_server, imap_server, case, reason
):
    deps = loop_server
    box, target, inc = await _crash_and_wait_for_request(deps, docker_env, smtp_server)
    request = _request(smtp_server)
    if case == "forged":
        token = str(request["Reply-To"]).split("+", 1)[1].split("@", 1)[0]
        forged = token[:-1] + ("a" if token[-1] != "a" else "b")
        del request["Reply-To"]
        request["Reply-To"] = f"ops+{forged}@example.test"
        raw = reply_to(request, "APPROVE")
    elif case == "not_approver":
        raw = reply_to(request, "APPROVE", sender="mallory@example.test")
    else:
        raw = reply_to(request, "I am not sure about this one.")  # APPROVE only in the quote
    imap_server.append(OPS, raw)

    async def rejected():
        entries = await deps.store.audit_entries()
        return [e for e in entries if e.tool == "approval:reply" and e.outcome == "rejected"]

    entries = await _until(rejected)
    assert reason in str(entries[0].args)
    await anyio.sleep(1.5)  # give a wrongly accepted reply the time it would need to act
    assert not _restarts(await deps.store.audit_entries(), target)
    assert docker_env._get(box).status == "exited"
    got = await deps.store.get_incident(inc.id)
    assert got is not None and got.status == IncidentStatus.awaiting_approval


async def test_approval_for_a_replaced_container_is_refused(
    loop_server, docker_env, smtp_server, imap_server, docker_client, busybox_image
):
    """The approved action was "restart container <id>": a recreated container is not it."""
    deps = loop_server
    box, target, _inc = await _crash_and_wait_for_request(deps, docker_env, smtp_server)
    name = box.name
    box.remove(force=True)
    twin = docker_client.containers.run(
        busybox_image, ["sh", "-c", "exit 5"], name=name, detach=True, network_mode="none",
        labels=MANAGED,
    )  # fmt: skip
    docker_env.containers.append(twin)
    imap_server.append(OPS, reply_to(_request(smtp_server), "APPROVE"))

    async def rejected():
        entries = await deps.store.audit_entries()
        return [e for e in entries if e.tool == "approval:reply" and e.outcome == "rejected"]

    entries = await _until(rejected)
    assert "action_changed" in str(entries[0].args)
    assert not _restarts(await deps.store.audit_entries(), target)


async def test_deny_escalates_and_runs_nothing(loop_server, docker_env, smtp_server, imap_server):
    deps = loop_server
    box, target, inc = await _crash_and_wait_for_request(deps, docker_env, smtp_server)
    imap_server.append(OPS, reply_to(_request(smtp_server), "DENY - investigating first"))

    async def escalated():
        got = await deps.store.get_incident(inc.id)
        return got is not None and got.status == IncidentStatus.escalated

    await _until(escalated)
    assert not _restarts(await deps.store.audit_entries(), target)
    assert docker_env._get(box).status == "exited"


async def test_reply_without_decision_becomes_a_note(
    loop_server, docker_env, smtp_server, imap_server
):
    deps = loop_server
    _box, _target, inc = await _crash_and_wait_for_request(deps, docker_env, smtp_server)
    imap_server.append(OPS, reply_to(_request(smtp_server), "The DB migration is running, wait."))

    async def noted():
        got = await deps.store.get_incident(inc.id)
        return got and [t for t in got.timeline if t.kind == "reply"]

    notes = await _until(noted)
    assert "migration is running" in notes[0].text
    async with Client(create_server(deps.settings, deps)) as c:
        got = await c.call_tool("read_replies", {"incident_id": inc.id})
    (reply,) = got.structured_content["replies"]
    assert reply["from"].endswith(APPROVER + ">") or APPROVER in reply["from"]
    assert "migration" in reply["note"]
