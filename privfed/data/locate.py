"""Finding dataset files in the data directory, downloading the missing ones."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from privfed.data import download
from privfed.data.errors import DatasetNotFoundError

ENV_VAR = "PRIVFED_DATA"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory to use.

    Precedence: the explicit ``data_dir`` argument (the CLI's ``--data-dir``),
    then the ``PRIVFED_DATA`` environment variable (if non-empty), then
    ``platformdirs.user_cache_dir("privfed")``. The directory is not created.

    Parameters
    ----------
    data_dir : str or os.PathLike or None
        Explicit directory, or ``None``.

    Returns
    -------
    pathlib.Path
        The chosen directory, with ``~`` expanded.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(ENV_VAR, "")
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_cache_dir("privfed"))


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset with its official source and checksum.

    Parameters
    ----------
    name : str
        File name as published, e.g. ``"train-images-idx3-ubyte.gz"``.
    url : str
        Official download address.
    md5 : str
        Official MD5 of the published file.
    aliases : tuple of str
        Other accepted names on disk, e.g. the uncompressed name.
    """

    name: str
    url: str
    md5: str
    aliases: tuple[str, ...] = ()


def search_dirs(root: Path, subdir: str) -> tuple[Path, Path]:
    """Return the directories searched for a dataset: ``root/subdir`` then ``root``."""
    return root / subdir, root


def find_file(dirs: Sequence[Path], file: RemoteFile) -> Path | None:
    """Return the first existing ``dir/name`` over ``dirs`` and the file's names, or ``None``."""
    for folder in dirs:
        for name in (file.name, *file.aliases):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def ensure_files(
    dataset: str,
    files: Sequence[RemoteFile],
    *,
    root: Path,
    subdir: str,
    allow_download: bool,
) -> dict[str, Path]:
    """Locate every file of a dataset, downloading missing ones if allowed.

    Files are looked for as ``root/subdir/<name>`` and ``root/<name>`` (each
    name or alias). Missing files are downloaded to ``root/subdir/<name>`` and
    checked against their official MD5.

    Parameters
    ----------
    dataset : str
        Dataset name, for messages.
    files : sequence of RemoteFile
        Files the dataset needs.
    root : pathlib.Path
        Data directory (see :func:`resolve_data_dir`).
    subdir : str
        Dataset sub-directory, e.g. ``"mnist"``.
    allow_download : bool
        Whether to try downloading missing files.

    Returns
    -------
    dict of str to pathlib.Path
        Path of each file, keyed by :attr:`RemoteFile.name`.

    Raises
    ------
    DatasetNotFoundError
        If files are missing and downloading is disabled or fails.
    ChecksumError
        If a downloaded file does not match its official MD5.
    """
    dirs = search_dirs(root, subdir)
    found = {f.name: find_file(dirs, f) for f in files}
    missing = [f for f in files if found[f.name] is None]
    if missing and not allow_download:
        raise DatasetNotFoundError(_missing_message(dataset, missing, dirs, "download=False"))
    for file in missing:
        try:
            found[file.name] = download.download_file(file.url, dirs[0] / file.name, file.md5)
        except OSError as exc:
            reason = f"download failed ({type(exc).__name__}: {exc})"
            still_missing = [f for f in missing if found[f.name] is None]
            raise DatasetNotFoundError(
                _missing_message(dataset, still_missing, dirs, reason)
            ) from exc
    return {name: path for name, path in found.items() if path is not None}


def _missing_message(
    dataset: str, missing: Sequence[RemoteFile], dirs: Sequence[Path], reason: str
) -> str:
    names = ", ".join(f.name for f in missing)
    alternatives = sorted({alias for f in missing for alias in f.aliases})
    also = (
        f" (or uncompressed/alternative names: {', '.join(alternatives)})" if alternatives else ""
    )
    urls = "\n".join(f"  {f.url}" for f in missing)
    return (
        f"dataset {dataset!r}: missing file(s) {names}{also}; searched "
        f"{' and '.join(str(d) for d in dirs)}; {reason}.\n"
        f"Put the files in {dirs[0]}, or point privfed to a directory holding them with "
        f"--data-dir DIR or the {ENV_VAR} environment variable. Official downloads:\n{urls}"
    )
