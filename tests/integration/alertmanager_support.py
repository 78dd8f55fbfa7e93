"""A real prometheus-alertmanager on loopback for the receiver tests (see tests/services.py).

Its config routes every alert to OpsMedic's receiver with bearer auth, except alerts
labelled ``opsmedic_test=badtoken``, which go to a receiver with a wrong token. Short
group_wait / group_interval / repeat_interval make notifications arrive within seconds.
No cluster (``--cluster.listen-address=``), its data in a temp dir, stopped by pid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.services import Service, free_port

BAD_TOKEN = "not-the-opsmedic-token-0"


@dataclass
class Alertmanager(Service):
    name: str = "alertmanager"
    webhook_url: str = ""
    token: str = ""
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        # JSON is YAML: no quoting surprises for the URL or the token
        config = {
            "route": {
                "receiver": "opsmedic",
                "group_by": ["..."],  # one group per alert: each notification carries one
                "group_wait": "200ms",
                "group_interval": "1s",
                "repeat_interval": "1s",
                "routes": [{"matchers": ['opsmedic_test="badtoken"'], "receiver": "bad-token"}],
            },
            "receivers": [
                self._receiver("opsmedic", self.token),
                self._receiver("bad-token", BAD_TOKEN),
            ],
        }
        (self.root / "am.yml").write_text(json.dumps(config, indent=1))

    def _receiver(self, name: str, token: str) -> dict[str, Any]:
        hook = {
            "url": self.webhook_url,
            "send_resolved": True,
            "http_config": {"authorization": {"credentials": token}},
        }
        return {"name": name, "webhook_configs": [hook]}

    def command(self) -> list[str]:
        return [
            "prometheus-alertmanager", f"--config.file={self.root}/am.yml",
            f"--storage.path={self.root}/data", f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=", "--log.level=info",
        ]  # fmt: skip

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    async def post_alert(
        self, labels: dict[str, str], *, resolved: bool = False, summary: str = "down"
    ) -> None:
        """POST one alert to /api/v2/alerts, as Prometheus would; resolved = endsAt past."""
        now = datetime.now(UTC)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": summary},
            "generatorURL": "http://prometheus.test/graph?g0.expr=up",
            "startsAt": (now - timedelta(minutes=1)).isoformat(),
        }
        if resolved:
            alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{self.url}/api/v2/alerts", json=[alert])
            r.raise_for_status()

    async def failed_webhook_notifications(self) -> float:
        """alertmanager_notifications_failed_total for the webhook integration."""
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"{self.url}/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("alertmanager_notifications_failed_total") and "webhook" in line:
                total += float(line.rsplit(" ", 1)[1])
        return total
