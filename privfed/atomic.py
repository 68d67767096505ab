"""Writes that a kill cannot leave half done, and the clean-up of what a killed writer left.

Every file and directory privfed writes for a user (run directories, audits, sweep records,
reports) is first written under a temporary name in its destination's directory and then
renamed into place, so a reader sees the old content or the new, never a mix. A temporary
is named ``.<name>.tmp-<pid>-<8 hex digits>`` after the process that writes it; once that
process is gone the temporary is stale and :func:`remove_stale_temporaries` removes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exchange_dirs", "exit_with_parent", "is_temporary", "publish_dir",
           "remove_stale_temporaries", "staging_dir", "temporary_path", "write_bytes",
           "write_text"]

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A fresh temporary name for ``target``, beside it (same file system), owned by this
    process: ``<parent>/.<name>.tmp-<pid>-<8 hex digits>``."""
    target = Path(target)
    return target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name is one of :func:`temporary_path`'s."""
    return _TEMPORARY.match(Path(path).name) is not None


def write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically: into a temporary beside it, flushed to disk,
    then renamed over ``path``; ``private``: readable and writable by the owner only
    (0600), else the umask's permissions."""
    path = Path(path)
    tmp = temporary_path(path)
    mode = 0o600 if private else 0o666
    try:
        with open(tmp, "wb", opener=lambda name, flags: os.open(name, flags, mode)) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary directory beside ``target`` to build it in; removed on exit unless
    :func:`publish_dir` moved it into place.

    The directory gets the umask's permissions (as ``target`` would), unlike
    ``tempfile.mkdtemp``'s 0700.
    """
    staging = temporary_path(target)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: Path, target: Path) -> Path:
    """Move the complete directory ``staging`` into place as ``target`` in one step.

    A new ``target`` is a rename; an existing one is exchanged with ``staging`` atomically
    (:func:`exchange_dirs`) and the old content, now under the temporary name, removed.
    Either way a reader of ``target`` sees the old directory or the new one, whole.
    """
    if not target.exists():
        os.replace(staging, target)
        return target
    exchange_dirs(staging, target)
    shutil.rmtree(staging, ignore_errors=True)  # the old directory, now at staging's name
    return target


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap the directories ``a`` and ``b`` atomically (both must exist, on one file system).

    Uses ``renameat2(RENAME_EXCHANGE)`` on Linux and ``renamex_np(RENAME_SWAP)`` on macOS.
    Elsewhere, three renames through a temporary name: a kill between them leaves ``b``
    absent and its old content under a temporary name, which
    :func:`remove_stale_temporaries` removes.

    Raises
    ------
    OSError
        From the system call (e.g. a path on another file system).
    """
    if _swap(a, b):
        return
    aside = temporary_path(b)
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def _swap(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` with the system's atomic exchange; False where there is none."""
    libc = _libc()
    if libc is None:
        return False
    encoded = (os.fsencode(a), os.fsencode(b))
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        result = libc.renameat2(at_fdcwd, encoded[0], at_fdcwd, encoded[1], rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        result = libc.renamex_np(encoded[0], encoded[1], rename_swap)
    else:
        return False
    if result != 0:
        errno = ctypes.get_errno()
        if errno in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: the file system cannot
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries in ``directory`` (files and folders named by
    :func:`temporary_path`) whose writing process is no longer running on this machine.

    A live process's temporaries, this process's included, are left alone.

    Returns
    -------
    list of Path
        What was removed.
    """
    directory = Path(directory)
    removed = []
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _process_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:
        return False
    return True


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Exit this process (status 1, without clean-up) as soon as ``parent_pid`` is no longer
    its parent: a worker's initializer, so that a killed parent leaves no worker behind.

    Starts a daemon thread that polls :func:`os.getppid` every ``interval`` seconds.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="privfed-exit-with-parent", daemon=True).start()
