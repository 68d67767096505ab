"""Where an audit keeps its finished steps, and how it publishes its directory.

An audit of ``out`` (e.g. ``<run dir>/audit``) works beside it, in its parent:

* ``.<name>.checkpoints/<config hash>/<unit>.npz``: one file per finished unit of work (the
  target federation, each reference model, each inversion scenario, the canary audit),
  written to a temporary file and renamed into place, holding the unit's arrays and, as
  JSON, its small results and the config hash it belongs to. An unreadable file (truncated,
  corrupt) or one of another config is never used: the unit is recomputed.
* a temporary directory (:func:`privfed.atomic.staging_dir`) in which the finished audit is
  written, with its ``SHA256SUMS``, and which then takes ``out``'s place in one step
  (:func:`privfed.atomic.publish_dir`), so a complete ``out`` is never modified.

Every temporary carries the id of the process that owns it
(:func:`privfed.atomic.temporary_path`); :func:`privfed.atomic.remove_stale_temporaries`
removes those whose process is dead, never a live one's.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privfed import jsonsafe
from privfed.atomic import remove_stale_temporaries, write_bytes
from privfed.integrity import DIGEST_FILE

__all__ = ["AUDIT_FILES", "Checkpoint", "CheckpointStore", "check_replaceable"]

AUDIT_FILES = frozenset({"leakage.json", "roc.png", "reconstructions.png", DIGEST_FILE})
"""The files of a complete audit directory (nothing else may be replaced by an audit)."""

_META = "__meta__"


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
        buffer = io.BytesIO()
        np.savez(buffer, **{_META: np.array(header)}, **arrays)
        write_bytes(self._path(unit), buffer.getvalue())
        return Checkpoint({k: np.asarray(v) for k, v in arrays.items()},
                          jsonsafe.from_json_safe(json.loads(header)["meta"]))

    def remove_stale(self) -> None:
        """Remove the temporary files of dead processes under the store."""
        if self.root.is_dir():
            for folder in (self.root, *filter(Path.is_dir, self.root.iterdir())):
                remove_stale_temporaries(folder)

    def remove(self) -> None:
        """Remove this config's units, and the store when no other config has any."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # another config's units, or already gone
            self.root.rmdir()


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
