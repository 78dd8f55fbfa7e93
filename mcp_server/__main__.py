"""`opsmedic` command line: serve | audit verify | version (and more as they land).

Configuration errors print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

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


def cmd_serve(args: argparse.Namespace) -> int:
    from mcp_server.app import create_server
    from mcp_server.logsetup import setup_logging
    from mcp_server.server_runner import serve_http, serve_stdio

    http_over = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = _settings(args, http=http_over or None)
    setup_logging(settings.log_level, settings.log_file)
    if args.http:
        from mcp_server.auth import check_bind

        check_bind(settings.http.host, settings.auth)
        asyncio.run(serve_http(create_server(settings), settings))
    else:
        asyncio.run(serve_stdio(create_server(settings), settings))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from mcp_server.store.base import open_store

    settings = _settings(args)

    async def run() -> int:
        store = open_store(settings.resolved_store_url)
        await store.open()
        try:
            verdict = await store.verify_audit()
        finally:
            await store.close()
        if verdict.ok:
            print(f"audit chain ok: {verdict.checked} entries verified")
            return 0
        print(f"audit chain BROKEN at seq {verdict.bad_seq}: {verdict.reason}")
        return 1

    return asyncio.run(run())


def cmd_run(args: argparse.Namespace) -> int:
    from agent_runner.main import RunOptions, run
    from mcp_server.logsetup import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_file)
    mode = args.mode or ("heal" if settings.mode == "heal" else "check")
    opts = RunOptions(
        mode=mode,
        once=args.once,
        url=args.url,
        token=args.token,
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
    return asyncio.run(run_demo())


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
    run.add_argument("--url", help="drive a remote server (streamable HTTP URL) instead")
    run.add_argument("--token", help="bearer token for --url")
    run.add_argument("--stdio", help='drive a server started as a command, e.g. "opsmedic serve"')
    run.add_argument("--no-http", action="store_true", help="do not serve HTTP locally")
    run.set_defaults(func=cmd_run)

    mon = sub.add_parser("monitors", help="run or test a configured monitor once")
    mon.add_argument("monitors_command", choices=["run", "test"], metavar="run|test")
    mon.add_argument("name", help="monitor name from the config")
    mon.set_defaults(func=cmd_monitors)

    audit = sub.add_parser("audit", help="audit log commands")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="walk the hash chain; exit 1 if broken")
    verify.set_defaults(func=cmd_audit_verify)

    demo = sub.add_parser("demo", help="watch the whole loop once, on throwaway defaults")
    demo.set_defaults(func=cmd_demo)

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
