"""Logging that never touches stdout (stdout carries JSON-RPC under `opsmedic serve`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mcp_server.errors import OpsMedicError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ExpectedErrors(logging.Filter):
    """Tool errors OpsMedic raised on purpose (refusals, not-found, bad input) are answers to
    the client, not server faults: log them on one line at INFO, without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None and not isinstance(exc, OpsMedicError):
            exc = exc.__cause__ or exc.__context__
        if isinstance(exc, OpsMedicError):
            record.msg = f"{record.getMessage()}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def setup_logging(level: str = "info", log_file: Path | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(ExpectedErrors())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # fastmcp installs its own (rich, stderr) handler on its logger; keep one path for records.
    for name in ("fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    logging.getLogger("docker").setLevel(max(root.level, logging.INFO))
    logging.getLogger("urllib3").setLevel(max(root.level, logging.INFO))
