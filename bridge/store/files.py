"""Private files for the SQLite database and its key: only the bridge's own user may read them.

The database holds token hashes and encrypted secrets, `secret.key` the key to those secrets; a
umask of 022 would leave both readable by every local account. So the data directory is created
0700 and the files 0600 before a byte is written, and an existing file (made by an older bridge,
or by hand) loses its group and other bits.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from bridge.errors import ConfigError

log = structlog.get_logger("bridge.store")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_directory(path: Path) -> None:
    """Create `path` (and its parents) with the last one 0700. An existing directory keeps its
    mode: it may be /tmp or a home directory, whose owner chose it."""
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory {path}: {exc}") from exc
    path.chmod(PRIVATE_DIR)  # mkdir's mode passes through the umask; chmod's does not


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 when missing (SQLite takes an empty file for a new
    database); take group and other permissions off an existing one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        restrict(path)
        return
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc}") from exc
    os.close(fd)


def restrict(path: Path) -> None:
    """Drop the group and other bits of an existing file. A file we may use but not chmod (a
    volume owned by another account) keeps working, with a warning instead of a refusal."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        path.chmod(mode & 0o700)
    except OSError as exc:
        log.warning("file_not_private", path=str(path), mode=oct(mode), reason=str(exc),
                    hint="make it readable by the bridge's user only: chmod 600")
