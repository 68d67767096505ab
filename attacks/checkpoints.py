"""Where an audit keeps its finished steps, and how it publishes its directory.

An audit of ``out`` (e.g. ``<run dir>/audit``) works beside it, in its parent:

* ``.<name>.checkpoints/<config hash>/<unit>.npz``: one file per finished unit of work (the
  target federation, each reference model, each inversion scenario, the canary audit),
  written to a temporary file and renamed into place, holding the unit's arrays and, as
  JSON, its small results and the config hash it belongs to. An unreadable file (truncated,
  corrupt) or one of another config is never used: the unit is recomputed.
* ``.<name>.staging-<pid>/``: the finished directory as it is being written, renamed to
  ``out`` when complete, so a complete ``out`` is never modified.
* ``.<name>.old-<pid>/``: an audit of another config that a new one replaces, removed once
  the new one is in place.

Every temporary carries the id of the process that owns it; :func:`remove_stale` removes
those whose process is dead, never a live one's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privfed import jsonsafe

__all__ = ["AUDIT_FILES", "Checkpoint", "CheckpointStore", "check_replaceable", "pid_alive",
           "publish", "remove_stale", "remove_stale_audit_temporaries", "staging_dir"]

AUDIT_FILES = frozenset({"leakage.json", "roc.png", "reconstructions.png"})
"""The files of a complete audit directory (nothing else may be replaced by an audit)."""

_META = "__meta__"
_TEMP_FILE = r".+\.tmp-(\d+)"


@dataclass(frozen=True)
class Checkpoint:
    """A finished unit of work: its arrays and its JSON-able results, as read back.

    Attributes
    ----------
    arrays : dict of str to numpy.ndarray
    meta : dict
        Plain data, as :func:`privfed.jsonsafe.loads` reads it (infinities restored, NaN as
        None), so a computed unit and a loaded one are the same values.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class CheckpointStore:
    """The finished units of the audit of one config, saved atomically.

    Parameters
    ----------
    out : Path
        The audit's directory; the store lives beside it (see the module docstring).
    key : str
        The config's hash (``config.short_hash()``): a unit saved under another key is
        never loaded.
    """

    def __init__(self, out: Path, key: str) -> None:
        self.key = key
        self.root = out.parent / f".{out.name}.checkpoints"
        self.directory = self.root / key

    def _path(self, unit: str) -> Path:
        return self.directory / f"{unit}.npz"

    def load(self, unit: str) -> Checkpoint | None:
        """The saved ``unit``, or None when it is missing, unreadable or of another config.

        Parameters
        ----------
        unit : str
            The unit's name (a file name stem, e.g. ``"reference-3"``).
        """
        try:
            with np.load(self._path(unit), allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            header = json.loads(str(arrays.pop(_META)))
            if header["key"] != self.key or header["unit"] != unit:
                return None
            meta = jsonsafe.from_json_safe(dict(header["meta"]))
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None
        return Checkpoint(arrays, meta)

    def save(self, unit: str, arrays: Mapping[str, np.ndarray],
             meta: Mapping[str, Any]) -> Checkpoint:
        """Write ``unit`` to a temporary file and rename it into place.

        Parameters
        ----------
        unit : str
        arrays : mapping of str to numpy.ndarray
        meta : mapping
            JSON-able results (through :func:`privfed.jsonsafe.dumps`).

        Returns
        -------
        Checkpoint
            The unit exactly as :meth:`load` will read it.
        """
        header = jsonsafe.dumps({"key": self.key, "unit": unit, "meta": dict(meta)})
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(unit)
        temp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(temp, "wb") as handle:
            np.savez(handle, **{_META: np.array(header)}, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        return Checkpoint({k: np.asarray(v) for k, v in arrays.items()},
                          jsonsafe.from_json_safe(json.loads(header)["meta"]))

    def remove_stale(self) -> None:
        """Remove the temporary files of dead processes under the store."""
        if self.root.is_dir():
            for folder in (self.root, *filter(Path.is_dir, self.root.iterdir())):
                remove_stale(folder, _TEMP_FILE)

    def remove(self) -> None:
        """Remove this config's units, and the store when no other config has any."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # another config's units, or already gone
            self.root.rmdir()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale(folder: Path, pattern: str) -> list[Path]:
    """Remove the temporaries under ``folder`` whose owning process is dead.

    Parameters
    ----------
    folder : Path
    pattern : str
        A regular expression that a temporary's whole name matches, its first group
        being the owner's pid.

    Returns
    -------
    list of Path
        What was removed.
    """
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = re.fullmatch(pattern, entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def remove_stale_audit_temporaries(out: Path) -> list[Path]:
    """Remove the staging and replaced directories of ``out`` that dead processes left."""
    pattern = rf"{re.escape(f'.{out.name}.')}(?:staging|old)-(\d+)"
    return remove_stale(out.parent, pattern)


def staging_dir(out: Path) -> Path:
    """A fresh, empty directory of this process in which ``out`` is written."""
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def check_replaceable(out: Path) -> None:
    """Refuse an ``out`` that exists and holds anything but an audit's files.

    Raises
    ------
    FileExistsError
        When ``out`` is not a directory, or holds other files (an audit replaces the
        directory as a whole and must never delete what it did not write).
    """
    if not out.exists():
        return
    if not out.is_dir() or not {p.name for p in out.iterdir()} <= AUDIT_FILES:
        raise FileExistsError(
            f"{out} exists and is not an audit directory (it holds more than "
            f"{', '.join(sorted(AUDIT_FILES))}); choose another output directory")


def publish(staging: Path, out: Path) -> None:
    """Rename the complete ``staging`` directory to ``out``.

    An existing ``out`` (an audit of another config, or an incomplete one written before
    audits were staged) is renamed aside, then removed once ``staging`` is in place.
    """
    check_replaceable(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
