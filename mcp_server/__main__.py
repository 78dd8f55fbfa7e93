"""`opsmedic` command line: serve | run | status | hold | release | audit verify | ...

Configuration errors print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from mcp_server import __version__
from mcp_server.errors import ConfigError
from mcp_server.settings import Settings, load_settings

logger = logging.getLogger("opsmedic")

EXIT_CONFIG = 2


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    extra = {k: v for k, v in overrides.items() if v is not None}
    if getattr(args, "log_level", None):
        extra["log_level"] = args.log_level
    return load_settings(args.config, **extra)


def check_data_dir(path: Path) -> None:
    """One line (ConfigError, exit 2) instead of tracebacks when the data dir is unusable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"data dir {str(path)!r} is not writable ({exc.strerror or exc}): give the OpsMedic "
            "user write access to it (chown/chmod), or set OPSMEDIC_DATA_DIR to a writable "
            "directory"
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from mcp_server.app import create_server
    from mcp_server.logsetup import setup_logging
    from mcp_server.server_runner import serve_http, serve_stdio

    http_over = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = _settings(args, http=http_over or None)
    check_data_dir(settings.data_dir)
    setup_logging(settings.log_level, settings.log_file)
    if args.http:
        from mcp_server.auth import check_bind

        check_bind(settings.http.host, settings.auth)
        asyncio.run(serve_http(create_server(settings), settings))
    else:
        asyncio.run(serve_stdio(create_server(settings), settings))
    return 0


def _view(args: argparse.Namespace) -> int:
    """Run one of the store-reading operator commands (see cli_views)."""
    from mcp_server import cli_views as v

    settings = _settings(args)
    name = args.view
    if name == "config":
        return v.cmd_config_check(settings)
    calls = {
        "status": lambda: v.cmd_status(settings),
        "incidents": lambda: v.cmd_incidents(settings, args.open, args.limit),
        "incident": lambda: v.cmd_incident(settings, args.incident_id),
        "jobs": lambda: v.cmd_jobs(settings),
        "audit-tail": lambda: v.cmd_audit_tail(settings, args.limit),
        "audit-verify": lambda: v.cmd_audit_verify(settings),
    }
    return asyncio.run(calls[name]())


def cmd_holds(args: argparse.Namespace) -> int:
    """`hold` / `release`: write a maintenance hold to the store (see cli_holds)."""
    from mcp_server import cli_holds

    settings = _settings(args)
    if args.command == "hold":
        return asyncio.run(cli_holds.cmd_hold(settings, args.target, args.duration, args.reason))
    return asyncio.run(cli_holds.cmd_release(settings, args.target))


def cmd_services(args: argparse.Namespace) -> int:
    from mcp_server.cli_swarm import cmd_services as services

    return asyncio.run(services(_settings(args), args.nodes))


def cmd_run(args: argparse.Namespace) -> int:
    from agent_runner.main import RunOptions, run
    from agent_runner.remotes import remotes
    from mcp_server.logsetup import setup_logging

    settings = _settings(args)
    if not args.no_http and not args.once:  # refuse before anything starts: one line, exit 2
        from mcp_server.auth import check_bind

        check_bind(settings.http.host, settings.auth)
    check_data_dir(settings.data_dir)
    setup_logging(settings.log_level, settings.log_file)
    mode: Literal["check", "heal"] = args.mode or ("heal" if settings.mode == "heal" else "check")
    opts = RunOptions(
        mode=mode,
        once=args.once,
        remotes=remotes(args.url or [], args.token or []),
        stdio=args.stdio,
        http=not args.no_http and not args.once,
    )
    return asyncio.run(run(settings, opts))


def cmd_monitors(args: argparse.Namespace) -> int:
    from agent_runner.monitors_cli import monitors_command

    settings = _settings(args)
    return asyncio.run(monitors_command(settings, args.monitors_command, args.name))


def cmd_demo(args: argparse.Namespace) -> int:
    from agent_runner.demo import run_demo
    from mcp_server.logsetup import setup_logging

    setup_logging("warning")
    return asyncio.run(
        run_demo(llm_url=args.llm, llm_model=args.llm_model, llm_timeout_s=args.llm_timeout)
    )


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"opsmedic {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsmedic",
        description="OpsMedic: a self-healing operations MCP server.",
    )
    parser.add_argument("--config", help="path of opsmedic.toml (or set OPSMEDIC_CONFIG)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--http", action="store_true", help="streamable HTTP at /mcp instead")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8765)")
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="server + agent runner + HTTP: unattended monitoring")
    run.add_argument("--mode", choices=["check", "heal"], help="default: OPSMEDIC_MODE")
    run.add_argument("--once", action="store_true", help="one pass; exit 1 if unhealthy")
    run.add_argument(
        "--url", action="append", help="drive a remote server (streamable HTTP URL) instead; "
        "repeat for several servers (one event loop each)",
    )  # fmt: skip
    run.add_argument(
        "--token", action="append", help="bearer token for --url: one per --url in order, or "
        "one for all; env:NAME reads it from $NAME",
    )  # fmt: skip
    run.add_argument("--stdio", help='drive a server started as a command, e.g. "opsmedic serve"')
    run.add_argument("--no-http", action="store_true", help="do not serve HTTP locally")
    run.set_defaults(func=cmd_run)

    mon = sub.add_parser("monitors", help="run or test a configured monitor once")
    mon.add_argument("monitors_command", choices=["run", "test"], metavar="run|test")
    mon.add_argument("name", help="monitor name from the config")
    mon.set_defaults(func=cmd_monitors)

    status = sub.add_parser(
        "status", help="live instances and duties, store, incidents; exit 3 unhealthy, 1 incidents"
    )
    status.set_defaults(func=_view, view="status")
    incs = sub.add_parser("incidents", help="list incidents")
    incs.add_argument("--open", action="store_true", help="only those not resolved")
    incs.add_argument("--limit", type=int, default=50)
    incs.set_defaults(func=_view, view="incidents")
    inc = sub.add_parser("incident", help="one incident: detail, RCA, timeline")
    inc.add_argument("incident_id", type=int)
    inc.set_defaults(func=_view, view="incident")
    jobs = sub.add_parser("jobs", help="bot jobs reported by hubs")
    jobs.set_defaults(func=_view, view="jobs")
    services = sub.add_parser("services", help="swarm services: replicas, update, task errors")
    services.add_argument("--nodes", action="store_true", help="the swarm's nodes instead")
    services.set_defaults(func=cmd_services)

    hold = sub.add_parser("hold", help="hold a target stopped on purpose: never healed")
    hold.add_argument("target", help="kind:name, e.g. container:web")
    hold.add_argument("--for", dest="duration", metavar="WHEN", help="30m, 2h, 1d (max 7d) or ISO")
    hold.add_argument("--reason", help="why it is stopped, e.g. 'db migration'")
    hold.set_defaults(func=cmd_holds)
    release = sub.add_parser("release", help="end a target's hold: policy may heal it again")
    release.add_argument("target", help="kind:name, e.g. container:web")
    release.set_defaults(func=cmd_holds)

    audit = sub.add_parser("audit", help="audit log: tail | verify")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser("verify", help="walk the hash chain; exit 1 if broken")
    verify.set_defaults(func=_view, view="audit-verify")
    tail = audit_sub.add_parser("tail", help="the newest audit entries")
    tail.add_argument("--limit", type=int, default=20)
    tail.set_defaults(func=_view, view="audit-tail")

    config = sub.add_parser("config", help="configuration: check")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate settings and print them (redacted)")
    check.set_defaults(func=_view, view="config")

    demo = sub.add_parser("demo", help="watch the whole loop once, on throwaway defaults")
    demo.add_argument(
        "--llm",
        metavar="URL",
        default=None,
        help="RCA by the OpenAI-compatible model at URL (e.g. a local llama.cpp "
        "server, http://127.0.0.1:8080/v1); rules when it fails or is rejected",
    )
    demo.add_argument("--llm-model", default="local", help="model name sent to --llm")
    demo.add_argument(
        "--llm-timeout",
        type=float,
        default=120.0,
        help="seconds the model may take per RCA (then rules)",
    )
    demo.set_defaults(func=cmd_demo)  # fmt: skip

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return func(args)
    except ConfigError as exc:
        print(f"opsmedic: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
