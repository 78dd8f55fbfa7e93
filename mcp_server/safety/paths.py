"""Path containment: may this request touch this path, given the configured roots?

Used by tail_logs (OPSMEDIC_LOG_ROOTS) and the clean_disk planner (OPSMEDIC_CLEAN_ROOTS).
Both the path as written and its real path (all symlinks resolved) must lie inside a root,
so a symlink that points out of a root is refused, and so is any `..` component.
The returned path is the real path: open *that*, not the string the caller gave.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp_server.errors import ConfigError, InvalidInput, Refused

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class RootsSetting:
    """How error messages name the setting that lists the allowed roots."""

    env: str  # e.g. OPSMEDIC_LOG_ROOTS
    noun: str  # "log roots"
    example: str  # "/var/log/app"
    purpose: str  # "reading files"


LOG_ROOTS = RootsSetting("OPSMEDIC_LOG_ROOTS", "log roots", "/var/log/app", "reading files")
CLEAN_ROOTS = RootsSetting("OPSMEDIC_CLEAN_ROOTS", "clean roots", "/var/tmp/app", "cleaning files")


def resolve_under_roots(path: str, roots: Sequence[str], setting: RootsSetting = LOG_ROOTS) -> Path:
    """Return the real path of `path` if it lies inside one of `roots`, else raise.

    Raises InvalidInput for an empty/relative path or a NUL byte, Refused for `..`
    components, for paths outside every root (as written or after resolving symlinks),
    and when no roots are configured. Messages name the allowed roots and the setting.
    """
    if not isinstance(path, str) or not path.strip():
        raise InvalidInput(
            f"path must be a non-empty absolute path, e.g. {setting.example}/app.log"
        )
    if "\0" in path:
        raise InvalidInput("path contains a NUL byte; pass a plain absolute path")
    real_roots = _real_roots(roots, setting)
    allowed = ", ".join(str(r) for r in real_roots)
    if not os.path.isabs(path):
        raise InvalidInput(
            f"path {path!r} is relative; pass an absolute path under one of: {allowed}"
        )
    if ".." in Path(path).parts:
        raise Refused(
            f"path {path!r} contains '..'; pass the direct absolute path under one of: {allowed}"
        )
    lexical = os.path.normpath(path)
    written = [Path(os.path.abspath(r)) for r in roots if r.strip()]
    if not any(is_within(lexical, r) for r in [*written, *real_roots]):
        raise Refused(
            f"path {path!r} is outside the allowed {setting.noun} ({allowed}); pick a file "
            f"under one of them, or add its directory to {setting.env}"
        )
    real = Path(os.path.realpath(lexical))
    if not any(is_within(real, r) for r in real_roots):
        raise Refused(
            f"path {path!r} resolves to {str(real)!r} (through a symlink), which is outside "
            f"the allowed {setting.noun} ({allowed}); symlinks out of a root are never followed"
        )
    return real


def is_within(path: StrPath, root: StrPath, *, resolve: bool = False) -> bool:
    """True if `path` is `root` or lies below it.

    Lexical by default (no filesystem access; a path with a `..` component is never
    within). With resolve=True both sides are first resolved with realpath, which is
    what a safety check on an existing file wants.
    """
    p, r = os.fspath(path), os.fspath(root)
    if "\0" in p or "\0" in r:
        return False
    if resolve:
        p, r = os.path.realpath(p), os.path.realpath(r)
    elif ".." in Path(p).parts:
        return False
    p, r = os.path.abspath(p), os.path.abspath(r)
    return Path(p).is_relative_to(r)


def _real_roots(roots: Sequence[str], setting: RootsSetting) -> list[Path]:
    cleaned = [r.strip() for r in roots if r and r.strip()]
    if not cleaned:
        raise Refused(
            f"no {setting.noun} configured: set {setting.env}={setting.example},... "
            f"to allow {setting.purpose}"
        )
    for root in cleaned:
        if "\0" in root:
            raise ConfigError(f"{setting.env} entry {root!r} contains a NUL byte; fix the value")
    return [Path(os.path.realpath(r)) for r in cleaned]


# --- opening without following symlinks ---------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK so that a FIFO swapped in never hangs the reader.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class OpenedFile:
    """A file opened by `open_nofollow`: its fd, its directory's fd, the path it was at.

    Read through `fd` only; open siblings (rotation) with `dir_fd` and O_NOFOLLOW."""

    path: Path
    fd: int
    dir_fd: int

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_nofollow(real: Path) -> OpenedFile:
    """Open the absolute, symlink-free path `real` one component at a time from "/", each
    with O_NOFOLLOW: if anything on the way became a symlink since it was checked, the open
    fails (ELOOP/ENOTDIR) instead of following it. Raises OSError like os.open."""
    parts = real.parts
    if not real.is_absolute() or len(parts) < 2 or any(p in (".", "..") for p in parts[1:]):
        raise InvalidInput(f"path {str(real)!r} must be absolute and without '..'")
    dir_fd = os.open("/", _DIR_FLAGS)
    try:
        for part in parts[1:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = child
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    return OpenedFile(real, fd, dir_fd)


def open_under_roots(
    path: str, roots: Sequence[str], setting: RootsSetting = LOG_ROOTS
) -> OpenedFile:
    """Check `path` as resolve_under_roots does, then open its real path without following
    any symlink (see open_nofollow). A path swapped for a symlink between the check and the
    open is refused, never read."""
    real = resolve_under_roots(path, roots, setting)
    try:
        return open_nofollow(real)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused(
                f"path {path!r} changed into a symlink while it was being opened; symlinks "
                f"out of the {setting.noun} are never followed"
            ) from None
        raise
