"""Pure parsing and formatting of Docker Engine API payloads (no I/O): list rows, stats.

Turns the engine's JSON (container list rows, stats samples) into small,
bounded models whose `line()`/`render()` text is written for an LLM to read. Everything here
takes plain dicts so it is unit-tested without an engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_server.errors import InvalidInput
from mcp_server.selectors import Selector

Health = Literal["none", "starting", "healthy", "unhealthy"]

#: Values list_containers(status=...) accepts; all but "unhealthy" are engine states.
STATUS_FILTERS = ("running", "exited", "restarting", "paused", "created", "dead", "unhealthy")
#: Label prefix always shown in the default (short) view.
OPSMEDIC_PREFIX = "opsmedic."
LINE_MAX = 100


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def clip(text: str, limit: int) -> str:
    """Whitespace collapsed to single spaces, cut to `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_id(value: str) -> str:
    """12-character id as `docker ps` shows it (drops a `sha256:` prefix)."""
    return value.removeprefix("sha256:")[:12]


# --- selectors (the one grammar: mcp_server.selectors) ---------------------------------


def engine_filters(selector: Selector, status: str | None) -> dict[str, list[str]]:
    """Filters the engine can apply itself (`!=` and `!key` terms are checked client-side)."""
    filters: dict[str, list[str]] = {}
    labels = [
        r.key if r.op == "exists" else f"{r.key}={r.value}"
        for r in selector.requirements
        if r.op in ("=", "exists")
    ]
    if labels:
        filters["label"] = labels
    if status == "unhealthy":
        filters["health"] = ["unhealthy"]
    elif status:
        filters["status"] = [status]
    return filters


def check_status(status: str | None) -> str | None:
    if status is None or status == "":
        return None
    value = status.strip().lower()
    if value not in STATUS_FILTERS:
        raise InvalidInput(f"unknown status {status!r}: use one of {', '.join(STATUS_FILTERS)}")
    return value


# --- container list rows ---------------------------------------------------------------

_EXIT_RE = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_RECENT_RE = re.compile(r"^Up (?:Less than a second|\d+ seconds?|About a minute|\d+ minutes?)")


_HEALTH: dict[object, Health] = {
    "starting": "starting",
    "healthy": "healthy",
    "unhealthy": "unhealthy",
}


def as_health(value: object) -> Health:
    """Normalise an engine health status; anything unknown (or no health check) is "none"."""
    return _HEALTH.get(value, "none")


def parse_health(status_text: str) -> Health:
    """Health from the list call's Status text, e.g. 'Up 3 minutes (unhealthy)'."""
    if "(health: starting)" in status_text:
        return "starting"
    if "(unhealthy)" in status_text:
        return "unhealthy"
    if "(healthy)" in status_text:
        return "healthy"
    return "none"


def parse_exit_code(status_text: str) -> int | None:
    """Exit code from 'Exited (3) 2 minutes ago' or 'Restarting (1) 1 second ago'."""
    match = _EXIT_RE.match(status_text)
    return int(match.group(1)) if match else None


def parse_docker_time(value: str | None) -> datetime | None:
    """RFC 3339 with nanoseconds -> aware UTC datetime; Docker's zero time -> None."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


class ContainerSummary(Model):
    """One row of list_containers. restart_count/started_at/finished_at are None when the
    row was not inspected (large listings inspect only notable rows; see DockerEngine)."""

    name: str
    id: str
    image: str
    status: str  # engine state: running, exited, restarting, paused, created, dead
    status_text: str  # the engine's own text, e.g. "Up 3 minutes (healthy)"
    health: Health = "none"
    exit_code: int | None = None
    restart_count: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    def line(self) -> str:
        """<= 100 characters: name | engine status text | restarts | image | shown labels."""
        parts = [self.name, self.status_text or self.status]
        if self.restart_count:
            parts.append(f"restarts={self.restart_count}")
        parts.append(clip(self.image.removesuffix(":latest"), 30))
        if self.labels:
            parts.append(",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        return clip(" | ".join(parts), LINE_MAX)

    def notable(self) -> bool:
        """Worth an inspect: not plainly running, unhealthy/starting, or (re)started lately."""
        if self.status != "running" or self.health in ("unhealthy", "starting"):
            return True
        return bool(_RECENT_RE.match(self.status_text))


def summary_from_row(row: Mapping[str, Any], label_keys: set[str] | None) -> ContainerSummary:
    """Build a summary from one `GET /containers/json` row.

    label_keys None keeps every label; otherwise keeps opsmedic.* plus those keys."""
    labels = row.get("Labels") or {}
    if label_keys is not None:
        labels = {
            k: clip(v, 60)
            for k, v in labels.items()
            if k.startswith(OPSMEDIC_PREFIX) or k in label_keys
        }
    names = row.get("Names") or [""]
    text = str(row.get("Status") or "")
    image = str(row.get("Image") or "")
    return ContainerSummary(
        name=names[0].lstrip("/"),
        id=short_id(str(row.get("Id", ""))),
        image=short_id(image) if image.startswith("sha256:") else image,
        status=str(row.get("State") or ""),
        status_text=text,
        health=parse_health(text),
        exit_code=parse_exit_code(text),
        labels=dict(labels),
    )


def with_inspect(summary: ContainerSummary, doc: Mapping[str, Any]) -> ContainerSummary:
    """Fill the inspect-only fields of a summary from an inspect document."""
    state = doc.get("State") or {}
    return summary.model_copy(
        update={
            "restart_count": int(doc.get("RestartCount") or 0),
            "started_at": parse_docker_time(state.get("StartedAt")),
            "finished_at": parse_docker_time(state.get("FinishedAt")),
        }
    )


def render_summaries(rows: Sequence[ContainerSummary]) -> str:
    """A heading with counts per status, then one line per container."""
    if not rows:
        return "no containers match"
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    unhealthy = sum(1 for r in rows if r.health == "unhealthy")
    head = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if unhealthy:
        head += f", {unhealthy} unhealthy"
    return "\n".join([f"{len(rows)} containers ({head})", *(r.line() for r in rows)])


# --- stats -----------------------------------------------------------------------------


def cpu_percent(sample: Mapping[str, Any]) -> float | None:
    """CPU % over the sample's own interval, as `docker stats` computes it (100 = one core).

    Uses the deltas between cpu_stats and precpu_stats; None when the engine sent no
    previous sample (one-shot stats, or a container that just started)."""
    cpu = sample.get("cpu_stats") or {}
    pre = sample.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    if total is None or pre_total is None or system is None or pre_system is None:
        return None
    cpu_delta, system_delta = total - pre_total, system - pre_system
    if system_delta <= 0 or cpu_delta < 0:
        return None
    cpus = (
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    return round(cpu_delta / system_delta * cpus * 100.0, 2)


def memory_usage(sample: Mapping[str, Any]) -> tuple[int, int] | None:
    """(used, limit) bytes; page cache excluded the way the docker CLI does (v1 and v2)."""
    mem = sample.get("memory_stats") or {}
    usage, limit = mem.get("usage"), mem.get("limit")
    if usage is None or not limit:
        return None
    stats = mem.get("stats") or {}
    cache = stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0
    return (max(int(usage) - int(cache), 0), int(limit))


def stats_row(name: str, container_id: str, sample: Mapping[str, Any]) -> dict[str, Any]:
    """One row of DockerEngine.stats(): name, id, cpu_pct, mem_usage/limit bytes, mem_pct."""
    mem = memory_usage(sample)
    used, limit = mem if mem else (None, None)
    return {
        "name": name,
        "id": short_id(container_id),
        "cpu_pct": cpu_percent(sample),
        "mem_usage_bytes": used,
        "mem_limit_bytes": limit,
        "mem_pct": round(used / limit * 100.0, 2) if used is not None and limit else None,
        "pids": (sample.get("pids_stats") or {}).get("current"),
    }
