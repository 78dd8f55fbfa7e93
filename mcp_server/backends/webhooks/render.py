"""Webhook bodies: one incident event (a `Notice`) as Slack, Teams or OpsMedic JSON.

Pure functions; every string in a Notice is already redacted by the caller.

- slack: an incoming-webhook message, `text` (mrkdwn, complete on its own: Mattermost and
  Rocket.Chat show only it) plus Block Kit `blocks` (header, section with fields, context,
  a button to the incident page). Slack's limits are kept: header 150, section text 3000,
  field 2000 characters, at most 10 fields.
- teams: the message a Teams "Workflows" webhook expects: `type: message` with one
  attachment of contentType `application/vnd.microsoft.card.adaptive` holding an Adaptive
  Card 1.4 (TextBlocks, a FactSet, an Action.OpenUrl to the incident page).
- json: OpsMedic's own schema, `schema_version` 1 (documented in README.md).

An approval notice says a person's decision is pending and links to the incident page; it
never carries an approval token or a link that approves (that takes the signed mail reply
or an operator token on the dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mcp_server import __version__

SCHEMA_VERSION = 1
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

HEADLINE = {
    "opened": "Incident #{id} opened",
    "escalated": "Incident #{id} escalated to a person",
    "resolved": "Incident #{id} resolved",
    "approval": "Incident #{id} is waiting for approval",
}
APPROVAL_TEXT = (
    "A heal action is waiting for a person's approval. Approvers were asked by signed "
    "email: reply there, or decide on the dashboard's incident page with an operator token."
)
TEAMS_COLOR = {"critical": "attention", "warning": "warning", "info": "accent"}


@dataclass(frozen=True)
class Notice:
    """One incident event for one channel; strings redacted, link unredacted (ours)."""

    delivery_id: str
    event: str  # opened / escalated / resolved / approval
    incident_id: int
    target: str
    symptom: str
    title: str
    severity: str
    status: str
    count: int
    text: str  # what happened (the transition's words); fixed text for approvals
    occurred_at: datetime
    link: str | None = None

    @property
    def headline(self) -> str:
        return HEADLINE.get(self.event, "Incident #{id} " + self.event).format(id=self.incident_id)

    @property
    def summary(self) -> str:
        """One line that stands alone (notification previews, Slack's fallback)."""
        return f"[{self.severity.upper()}] {self.headline}: {self.target} {self.symptom}"


def render(fmt: str, notice: Notice) -> dict[str, Any]:
    """The JSON body for channel format `fmt` (slack / teams / json)."""
    if fmt == "slack":
        return slack(notice)
    if fmt == "teams":
        return teams(notice)
    return opsmedic_json(notice)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _facts(n: Notice) -> list[tuple[str, str]]:
    return [
        ("Target", n.target),
        ("Symptom", n.symptom),
        ("Severity", n.severity),
        ("Status", n.status),
        ("Seen", f"{n.count}x"),
    ]


# --- slack (and Mattermost / Rocket.Chat) -------------------------------------------------


def _mrkdwn(text: str) -> str:
    """Slack's control characters in message text (its docs: escape &, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(n: Notice) -> dict[str, Any]:
    link = f" <{n.link}|Open incident #{n.incident_id}>" if n.link else ""
    stamp = f"OpsMedic {__version__} · {n.occurred_at:%Y-%m-%d %H:%M:%S} UTC"
    body = _cut(_mrkdwn(f"{n.title}\n{n.text}".strip() or n.summary), 2900)
    fields = [{"type": "mrkdwn", "text": _cut(f"*{k}*\n{_mrkdwn(v)}", 2000)} for k, v in _facts(n)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(n.headline, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body}, "fields": fields},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": stamp}]},
    ]
    if n.link:
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": f"Open incident #{n.incident_id}"},
            "url": n.link,
        }
        blocks.append({"type": "actions", "elements": [button]})
    text = _cut(_mrkdwn(n.summary) + f"\n{body}" + link, 3900)
    return {"text": text, "blocks": blocks}


# --- Microsoft Teams (Workflows webhook: a message carrying an Adaptive Card) -------------


def teams(n: Notice) -> dict[str, Any]:
    color = "good" if n.event == "resolved" else TEAMS_COLOR.get(n.severity, "default")
    card: dict[str, Any] = {
        "$schema": ADAPTIVE_SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": _cut(n.summary, 300),
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            *[
                {"type": "TextBlock", "text": _cut(text, 3000), "wrap": True}
                for text in (n.title, n.text)
                if text
            ],
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(n)]},
        ],
    }
    if n.link:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": f"Open incident #{n.incident_id}", "url": n.link}
        ]
    attachment = {"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}
    return {"type": "message", "attachments": [attachment]}


# --- OpsMedic JSON ------------------------------------------------------------------------


def opsmedic_json(n: Notice) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "delivery_id": n.delivery_id,
        "event": n.event,
        "occurred_at": n.occurred_at.isoformat(timespec="seconds"),
        "summary": n.summary,
        "text": n.text,
        "incident": {
            "id": n.incident_id,
            "target": n.target,
            "symptom": n.symptom,
            "title": n.title,
            "severity": n.severity,
            "status": n.status,
            "count": n.count,
            "url": n.link,
        },
        "source": {"name": "opsmedic", "version": __version__},
    }
