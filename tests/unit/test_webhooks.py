"""Webhook channels, pure parts: settings, which events a channel gets, and the bodies as the
receiving systems document them (JSON Schemas in tests/data/webhooks and the package)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mcp_server.backends.webhooks.outbox import event_kind, incident_link
from mcp_server.backends.webhooks.render import APPROVAL_TEXT, Notice, render
from mcp_server.errors import ConfigError
from mcp_server.models import Event
from mcp_server.settings import load_settings
from mcp_server.settings_webhooks import WebhookSpec

DATA = Path(__file__).resolve().parents[1] / "data" / "webhooks"
PACKAGE = Path(__file__).resolve().parents[2] / "mcp_server" / "backends" / "webhooks"
SCHEMAS = {
    "slack": DATA / "slack-incoming-webhook.schema.json",
    "teams": DATA / "teams-workflow-adaptive-card.schema.json",
    "json": PACKAGE / "opsmedic-webhook-v1.schema.json",
}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("OPSMEDIC_"):
            monkeypatch.delenv(key)


def validate(fmt: str, body: dict[str, Any]) -> None:
    schema = json.loads(SCHEMAS[fmt].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(body)


def notice(**kw: Any) -> Notice:
    base: dict[str, Any] = dict(
        delivery_id="hook:ops:incident.opened:7:1:1.0", event="opened", incident_id=7,
        target="container:web", symptom="down", title="web exited with code 137",
        severity="critical", status="open", count=1, text="OpsMedic opened this incident.",
        occurred_at=T0, link="https://ops.example.test/incidents/7",
    )  # fmt: skip
    return Notice(**{**base, **kw})


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["slack", "teams", "json"])
@pytest.mark.parametrize("event", ["opened", "escalated", "resolved", "approval"])
def test_every_body_matches_the_documented_shape(fmt: str, event: str) -> None:
    body = render(fmt, notice(event=event))
    validate(fmt, body)
    assert "https://ops.example.test/incidents/7" in json.dumps(body)


@pytest.mark.parametrize("fmt", ["slack", "teams", "json"])
def test_long_or_empty_text_stays_within_the_limits(fmt: str) -> None:
    validate(fmt, render(fmt, notice(title="t" * 10_000, text="x" * 10_000)))
    validate(fmt, render(fmt, notice(title="", text="", link=None)))


def test_slack_text_stands_alone_and_escapes_control_characters() -> None:
    body = render("slack", notice(title="<!channel> a & b"))
    text = body["text"]
    assert text.startswith("[CRITICAL] Incident #7 opened: container:web down")
    assert "&lt;!channel&gt; a &amp; b" in text and "<!channel>" not in json.dumps(body)
    assert "<https://ops.example.test/incidents/7|Open incident #7>" in text
    [button] = body["blocks"][-1]["elements"]
    assert button["url"] == "https://ops.example.test/incidents/7"


def test_teams_card_links_the_incident_page() -> None:
    card = render("teams", notice())["attachments"][0]["content"]
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open incident #7",
         "url": "https://ops.example.test/incidents/7"}
    ]  # fmt: skip
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert facts["Target"] == "container:web" and facts["Severity"] == "critical"


def test_json_schema_version_and_fields() -> None:
    body = render("json", notice(event="resolved", status="resolved"))
    assert body["schema_version"] == 1 and body["event"] == "resolved"
    assert body["incident"]["url"] == "https://ops.example.test/incidents/7"
    assert body["delivery_id"] == "hook:ops:incident.opened:7:1:1.0"


# --- which events a channel gets -------------------------------------------------------------


def ev(type_: str, status: str | None = None, incident_id: int | None = 3) -> Event:
    data = {"status": status} if status else {}
    return Event(id="x", source="incident", type=type_, incident_id=incident_id, data=data)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (ev("incident.opened", "open"), "opened"),
        (ev("incident.status", "escalated"), "escalated"),
        (ev("incident.status", "resolved"), "resolved"),
        (ev("incident.status", "awaiting_approval"), "approval"),
        (ev("incident.status", "healing"), None),
        (ev("incident.repeat", "open"), None),
        (ev("incident.note"), None),
        (ev("incident.opened", incident_id=None), None),
    ],
)
def test_event_kinds(event: Event, kind: str | None) -> None:
    assert event_kind(event) == kind


def test_channel_subscription_and_min_severity() -> None:
    spec = WebhookSpec(name="ops", url="http://x.test/", events=["resolved"],
                       min_severity="critical")  # fmt: skip
    assert spec.wants("resolved", "critical")
    assert not spec.wants("resolved", "warning")
    assert not spec.wants("opened", "critical")
    default = WebhookSpec(name="d", url="http://x.test/")
    assert default.events == ["opened", "escalated", "resolved"]  # approval is opt-in
    assert default.wants("opened", "warning") and not default.wants("opened", "info")


def test_approval_text_carries_no_way_to_approve() -> None:
    body = json.dumps(render("json", notice(event="approval", text=APPROVAL_TEXT)))
    assert "/approve" not in body and "token=" not in body.lower()
    assert incident_link("https://ops.test/", 9) == "https://ops.test/incidents/9"
    assert incident_link("ops.test", 9) is None


# --- settings --------------------------------------------------------------------------------


def test_toml_list_of_channels_with_secret_from_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "s3cr3t-hook-token")
    cfg = tmp_path / "opsmedic.toml"
    cfg.write_text(
        '[notify]\ndashboard_url = "https://ops.test"\n'
        '[[notify.webhooks]]\nname = "chat"\nurl = "https://hooks.slack.test/services/T/B/X"\n'
        'format = "slack"\nevents = ["opened", "approval"]\nmin_severity = "critical"\n'
        '[[notify.webhooks]]\nname = "siem"\nurl = "http://127.0.0.1:9/in"\n'
        'secret_header = "X-OpsMedic-Token: ${HOOK_TOKEN}"\n'
    )
    s = load_settings(cfg)
    chat, siem = s.notify.webhooks
    assert (chat.format, chat.events, chat.min_severity) == ("slack", ["opened", "approval"],
                                                             "critical")  # fmt: skip
    assert siem.format == "json" and siem.header() == ("X-OpsMedic-Token", "s3cr3t-hook-token")
    assert "s3cr3t-hook-token" not in repr(siem) and "s3cr3t-hook-token" not in str(s)
    assert {"s3cr3t-hook-token", "/services/T/B/X"} <= set(s.secret_values())


def test_url_from_env_and_only_its_secret_part_is_redacted(monkeypatch) -> None:
    monkeypatch.setenv("TEAMS_URL", "https://x.webhook.office.test/workflows/abc123?sig=Zq9")
    monkeypatch.setenv("OPSMEDIC_NOTIFY__WEBHOOKS", '[{"name": "t", "url": "${TEAMS_URL}"}]')
    s = load_settings()
    assert s.notify.webhooks[0].url == "https://x.webhook.office.test/workflows/abc123?sig=Zq9"
    assert "/workflows/abc123?sig=Zq9" in s.secret_values()
    assert not any("x.webhook.office.test" in v for v in s.secret_values())


def test_channels_from_env_as_json(monkeypatch) -> None:
    monkeypatch.setenv("OPSMEDIC_NOTIFY__WEBHOOKS",
                       '[{"name": "t", "url": "https://x.test/h", "format": "teams",'
                       ' "events": "opened,resolved"}]')  # fmt: skip
    [hook] = load_settings().notify.webhooks
    assert hook.format == "teams" and hook.events == ["opened", "resolved"]


@pytest.mark.parametrize(
    ("hooks", "expected"),
    [
        ('[{"name": "a", "url": "ftp://x"}]', "http:// or https://"),
        ('[{"name": "a", "url": "http://x", "format": "discord"}]', "format"),
        ('[{"name": "a", "url": "http://x", "events": ["paged"]}]', "events"),
        ('[{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]', "named 'a'"),
        ('[{"name": "a", "url": "http://x", "colour": "red"}]', "unknown"),
        ('[{"name": "a", "url": "http://x", "secret_header": "novalue"}]', "X-Header-Name"),
        ('[{"name": "a", "url": "http://x", "secret_header": "Host: h"}]', "set by OpsMedic"),
        ('[{"name": "a", "url": "http://x", "secret_header": "X-T: ${NOPE_UNSET}"}]', "NOPE_UNSET"),
        ("[{", "JSON list"),
    ],
)
def test_bad_channels_give_one_clear_line(monkeypatch, hooks: str, expected: str) -> None:
    monkeypatch.delenv("NOPE_UNSET", raising=False)
    monkeypatch.setenv("OPSMEDIC_NOTIFY__WEBHOOKS", hooks)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert expected.lower() in str(err.value).lower() and "\n" not in str(err.value)


def test_a_bad_secret_header_is_never_echoed(monkeypatch) -> None:
    bad = '[{"name": "a", "url": "http://x", "secret_header": "bad header: hunter2x"}]'
    monkeypatch.setenv("OPSMEDIC_NOTIFY__WEBHOOKS", bad)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "hunter2x" not in str(err.value)
