"""One Settings object: env vars with prefix OPSMEDIC_ (nested with __), or opsmedic.toml.

Precedence: explicit arguments > environment > TOML file > defaults. A bad value or an
unknown key becomes a one-line ConfigError naming the key, the problem and the fix.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from mcp_server.errors import ConfigError
from mcp_server.settings_webhooks import WebhookSpec, unique_names, webhook_list

ENV_PREFIX = "OPSMEDIC_"
TEST_PREFIX = "OPSMEDIC_TEST_"  # the test harness's own variables, not settings

CsvList = Annotated[list[str], NoDecode]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    path: str = "/mcp"
    allowed_hosts: CsvList = Field(default_factory=list)
    allowed_origins: CsvList = Field(default_factory=list)

    _csv = field_validator("allowed_hosts", "allowed_origins", mode="before")(_split_csv)


class AuthSettings(_Section):
    tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_public_key: str | None = None  # PEM text or a path to a PEM file
    jwt_jwks_uri: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithm: str = "RS256"

    _csv = field_validator("tokens", mode="before")(_split_csv)

    @property
    def enabled(self) -> bool:
        return bool(self.tokens or self.jwt_public_key or self.jwt_jwks_uri)


class PolicySettings(_Section):
    selector: str = "opsmedic.managed=true"
    allow: CsvList = Field(default_factory=list)  # explicit targets, e.g. container:web
    approve: CsvList = Field(default_factory=list)  # actions needing a person's yes
    max_restarts: int = Field(default=3, ge=1)
    window_s: float = Field(default=900.0, gt=0)
    base_delay_s: float = Field(default=10.0, ge=0)
    max_delay_s: float = Field(default=300.0, ge=0)
    healthy_reset_s: float = Field(default=600.0, gt=0)
    global_max_per_hour: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=0.0, ge=0)
    max_concurrent: int = Field(default=2, ge=1)
    verify_timeout_s: float = Field(default=30.0, gt=0)
    verify_stable_s: float = Field(default=1.0, ge=0)  # must stay up this long to count
    auto_restart: bool = True  # in heal mode, the server restarts failed targets itself
    # desired vs actual for every managed target, at startup and every reconcile_s
    reconcile_s: float = Field(default=30.0, gt=0)
    # every OpsMedic writes its heartbeat this often; one silent for 2 intervals is an incident
    heartbeat_s: float = Field(default=10.0, ge=0.5)
    # ask the person at an MCP client for approval in-band (off: a headless client could
    # answer its own question); email approval stays the default path
    elicit: bool = False

    _csv = field_validator("allow", "approve", mode="before")(_split_csv)


class SmtpSettings(_Section):
    host: str | None = None
    port: int = 25
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field(default="opsmedic@localhost", alias="from")
    tls: Literal["none", "starttls", "tls"] = "none"
    timeout_s: float = 10.0

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ImapSettings(_Section):
    host: str | None = None
    port: int = 143
    username: str | None = None
    password: SecretStr | None = None
    tls: Literal["none", "starttls", "tls"] = "none"
    mailbox: str = "INBOX"
    poll_s: float = 30.0


class AuditSettings(_Section):
    # HMAC keys "id:secret,..." (the first signs); unset: a random key in data_dir/audit.key
    keys: SecretStr | None = None
    # where the chain's head is anchored; unset: <data_dir>.audit-head.json beside data_dir
    anchor_path: Path | None = None
    anchor_interval_s: float = Field(default=60.0, gt=0)


class ToolsSettings(_Section):
    # tool names removed from the catalogue (and refused) in every mode
    disable: CsvList = Field(default_factory=list)

    _csv = field_validator("disable", mode="before")(_split_csv)


class NotifySettings(_Section):
    to: CsvList = Field(default_factory=list)
    # more addresses or bare domains send_email may write to (besides `to` and approvers)
    allow: CsvList = Field(default_factory=list)
    dashboard_url: str | None = None
    webhooks: list[WebhookSpec] = Field(default_factory=list)  # [[notify.webhooks]]

    _csv = field_validator("to", "allow", mode="before")(_split_csv)
    _hooks = field_validator("webhooks", mode="before")(webhook_list)
    _unique = field_validator("webhooks")(unique_names)


def _json_dict(value: Any) -> Any:
    """Dict settings given as one env var hold JSON text: OPSMEDIC_INGEST__MAPPING='{...}'."""
    if isinstance(value, str):
        import json

        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError('expected a JSON object such as {"id": "event_id"}') from None
    return value


class IngestSettings(_Section):
    """Bot-job ingest: client mode (url) and the /ingest endpoint (token). See backends/ingest."""

    url: str | None = None
    token: SecretStr | None = None
    max_frame_bytes: int = 1024 * 1024  # one frame may carry a JSON array of ~500 events
    rate_per_s: float = 2000.0
    hub_token: SecretStr | None = None  # sent to the hub in client mode; defaults to token
    headers: dict[str, str] = Field(default_factory=dict)  # extra headers for the hub
    resume: Literal["query", "hello", "none"] = "query"
    resume_param: str = "after"
    hub_max_frame_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    mapping: dict[str, str] = Field(default_factory=dict)  # our field -> dotted path in theirs
    type_map: dict[str, str] = Field(default_factory=dict)  # their type value -> ours
    path: str = "/ingest"
    allowed_origins: CsvList = Field(default_factory=list)  # browser origins allowed on /ingest
    webhook_url: str | None = None  # restarts go here when set (else over the hub socket)
    webhook_token: SecretStr | None = None
    job_timeout_s: float = Field(default=300.0, gt=0)  # no heartbeat this long = stalled
    log_lines_per_run: int = Field(default=200, ge=1)
    batch_max: int = Field(default=500, ge=1)
    batch_wait_s: float = Field(default=0.05, ge=0)
    stall_check_s: float = Field(default=15.0, gt=0)
    reconnect_min_s: float = Field(default=0.5, gt=0)  # hub reconnect backoff, doubling
    reconnect_max_s: float = Field(default=30.0, gt=0)

    _csv = field_validator("allowed_origins", mode="before")(_split_csv)
    _dicts = field_validator("headers", "mapping", "type_map", mode="before")(_json_dict)


class ProcessSpec(_Section):
    """A command OpsMedic may supervise (start, watch, restart)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    argv: list[str] = Field(min_length=1)
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    restart: Literal["never", "on-failure", "always"] = "never"  # OpsMedic policy decides heals
    autostart: bool = True


class ProbeSpec(_Section):
    """An HTTP or TCP check run on an interval; its target is probe:NAME."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["http", "tcp"] = "http"
    url: str | None = None  # http
    method: str = "GET"
    expect_status: int = 200
    body_contains: str | None = None
    host: str | None = None  # tcp
    port: int | None = None
    timeout_s: float = 5.0
    latency_warn_ms: float | None = None
    interval_s: float = 30.0


class Thresholds(_Section):
    """Warn/crit percentages per metric; status is ok / warn / crit."""

    interval_s: float = 15.0  # how often the server checks host metrics for incidents
    cpu_warn: float = 85.0
    cpu_crit: float = 95.0
    mem_warn: float = 85.0
    mem_crit: float = 95.0
    swap_warn: float = 50.0
    swap_crit: float = 90.0
    disk_warn: float = 85.0
    disk_crit: float = 95.0
    load_per_core_warn: float = 1.5
    load_per_core_crit: float = 3.0


class CleanRule(_Section):
    """Which files under a clean root a plan may include."""

    glob: str = "*.log*"
    min_age_s: float = 7 * 86400.0
    min_size_bytes: int = 0


class CleanSettings(_Section):
    rules: list[CleanRule] = Field(default_factory=lambda: [CleanRule()])
    docker_dangling_images: bool = False
    docker_stopped_unmanaged: bool = False
    docker_build_cache: bool = False
    max_items: int = 500


class MonitorInput(_Section):
    """One thing a monitor reads. Structured kinds only, except `command`, which is allowed
    only from the operator's own config file (argv form, never a shell string)."""

    kind: Literal[
        "container_logs", "file", "process_logs", "job_logs", "probe", "metrics", "command"
    ]
    label: str = ""
    name: str | None = None  # container / process / job / probe name
    path: str | None = None  # file (must be under log_roots)
    since_s: float | None = None
    lines: int = Field(default=200, ge=1, le=5000)
    grep: str | None = None
    argv: list[str] = Field(default_factory=list)  # command
    timeout_s: float = Field(default=10.0, gt=0, le=600)


class MonitorWindow(_Section):
    max_lines: int = Field(default=400, ge=1)
    max_chars: int = Field(default=12_000, ge=200)


class MonitorSpec(_Section):
    """A scheduled check: read inputs, judge ok / warn / alert, keep the evidence as a Run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    inputs: list[MonitorInput] = Field(min_length=1)
    window: MonitorWindow = Field(default_factory=MonitorWindow)
    prompt: str | None = None  # what an LLM should judge (used when a provider is set)
    interval_s: float = Field(default=300.0, ge=1)
    notify_on: Literal["alert_only", "warn_and_alert", "all"] = "alert_only"


class LlmSettings(_Section):
    provider: Literal["none", "openai", "anthropic"] = "none"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    # the whole RCA or judgement (every try and step) must finish within this; then rules
    timeout_s: float = Field(default=60.0, gt=0)
    max_tokens: int = Field(default=512, ge=16)  # per answer; the RCA JSON fits in ~300
    # the model's context window; None: read llama.cpp's /props, else assume 8192
    context_tokens: int | None = Field(default=None, ge=256)
    concurrency: int = Field(default=2, ge=1)  # RCAs in flight; more wait for rules
    breaker_failures: int = Field(default=3, ge=1)  # failures in a row that open the breaker
    breaker_cooldown_s: float = Field(default=60.0, gt=0)  # then one trial call


class SwarmSettings(_Section):
    """Docker Swarm services and nodes as targets (service:NAME, node:NAME)."""

    enabled: bool = False  # true: the swarm the Docker engine OpsMedic watches manages
    docker_host: str | None = None  # a manager's URL (unix://, tcp://); setting it enables
    poll_s: float = Field(default=5.0, gt=0)  # how often services and nodes are looked at
    task_failures: int = Field(default=3, ge=1)  # failed tasks within the window = incident
    failure_window_s: float = Field(default=300.0, gt=0)
    shortfall_s: float = Field(default=30.0, ge=0)  # running < desired this long = incident

    @property
    def active(self) -> bool:
        return self.enabled or bool(self.docker_host)


class Settings(BaseSettings):
    """Everything OpsMedic can be told. See the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    config: Path | None = None
    data_dir: Path = Path(".opsmedic")
    store_url: str | None = None
    mode: Literal["observe", "check", "heal"] = "check"
    # the name a fleet knows this OpsMedic by (incidents, audit, heartbeats); unique per process
    instance: str = Field(default_factory=socket.gethostname, min_length=1, max_length=120)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_file: Path | None = None
    # HMAC key for approval tokens; a random one is kept under data_dir when unset
    secret: SecretStr | None = Field(default=None, min_length=16)
    log_roots: CsvList = Field(default_factory=list)
    clean_roots: CsvList = Field(default_factory=list)
    approvers: CsvList = Field(default_factory=list)

    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    swarm: SwarmSettings = Field(default_factory=SwarmSettings)
    processes: list[ProcessSpec] = Field(default_factory=list)
    probes: list[ProbeSpec] = Field(default_factory=list)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    monitors: list[MonitorSpec] = Field(default_factory=list)
    monitor_concurrency: int = Field(default=4, ge=1)

    _csv = field_validator("log_roots", "clean_roots", "approvers", mode="before")(_split_csv)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges env and file itself (env beats file); Settings(...) in code
        # and tests therefore never picks up stray environment by accident.
        return (init_settings,)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'opsmedic.db').resolve()}"

    def secret_values(self) -> list[str]:
        """Every configured secret's plain value, so redaction can scrub them anywhere."""
        found: list[str] = [t.get_secret_value() for t in self.auth.tokens]
        for value in (
            self.secret,
            self.smtp.password,
            self.imap.password,
            self.ingest.token,
            self.ingest.hub_token,
            self.ingest.webhook_token,
            self.llm.api_key,
        ):
            if value is not None:
                found.append(value.get_secret_value())
        for hook in self.notify.webhooks:
            found += hook.secrets()
        if self.audit.keys is not None:  # each key's secret part, not the "id:" prefix
            found += [k.partition(":")[2] for k in self.audit.keys.get_secret_value().split(",")]
        return [v for v in found if len(v) >= 4]


# --- loading ---------------------------------------------------------------------------


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from env, the TOML file (if any) and overrides; raise ConfigError."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper().startswith(ENV_PREFIX) and not k.upper().startswith(TEST_PREFIX)
    }
    _check_unknown_env(env)
    path = config_path or env.get(f"{ENV_PREFIX}CONFIG") or os.environ.get("OPSMEDIC_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        file_values = _read_toml(Path(path))
        _check_unknown_keys(file_values, Settings, prefix="")
    try:
        # env beats the file: pass file values as init defaults that env overrides.
        merged = _merge(file_values, _env_as_dict(env))
        merged = _merge(merged, overrides)
        if path:
            merged["config"] = Path(path)
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, from_file=bool(path))) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: fix the path given by --config/OPSMEDIC_CONFIG"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix that line") from None


def _env_as_dict(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in env.items():
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        if parts == ["config"]:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_names(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    names: dict[str, type[BaseModel] | None] = {}
    for name, info in model.model_fields.items():
        sub = info.annotation if isinstance(info.annotation, type) else None
        nested = sub if sub is not None and issubclass(sub, BaseModel) else None
        names[name] = nested
        if info.alias:
            names[info.alias] = nested
    return names


def _check_unknown_keys(values: dict[str, Any], model: type[BaseModel], prefix: str) -> None:
    known = _field_names(model)
    for key, value in values.items():
        if key.lower() not in known:
            where = f"[{prefix.rstrip('.')}] " if prefix else ""
            raise ConfigError(
                f"config key {where}{key!r} is unknown: remove it or use one of "
                f"{', '.join(sorted(k for k in known if k != 'config'))}"
            )
        nested = known[key.lower()]
        if nested is not None and isinstance(value, dict):
            _check_unknown_keys(value, nested, prefix=f"{prefix}{key}.")


def _check_unknown_env(env: dict[str, str]) -> None:
    for key in env:
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        for i, part in enumerate(parts):
            known = _field_names(model) if model is not None else {}
            if part not in known:
                raise ConfigError(
                    f"environment variable {key} is unknown: unset it, or check the name "
                    f"against the configuration table in README.md (did you mean "
                    f"{ENV_PREFIX}{'__'.join(p.upper() for p in parts[:i]) + '__' if i else ''}"
                    f"{_closest(part, known)}?)"
                )
            model = known[part]


def _closest(word: str, options: dict[str, Any]) -> str:
    import difflib

    match = difflib.get_close_matches(word, list(options), n=1)
    return (match[0] if match else sorted(options)[0]).upper()


def _explain(exc: ValidationError, from_file: bool) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    env_name = ENV_PREFIX + "__".join(p.upper() for p in loc)
    toml_name = ".".join(loc)
    where = f"{env_name} (or {toml_name} in opsmedic.toml)" if from_file else env_name
    value = err.get("input")
    secret = any(w in toml_name.lower() for w in ("secret", "password", "token", "key"))
    shown = "" if isinstance(value, dict) or secret else f"={value!r}"  # never echo secrets
    msg = err["msg"].rstrip(".")
    if err["type"] == "extra_forbidden":
        return f"config key {toml_name!r} is unknown: remove it (see the configuration table)"
    return f"config {where}{shown} is invalid: {msg}. Fix it and start again"
