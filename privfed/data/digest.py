"""What a run reads of its data, as text for its identity: a digest per file, never a path.

A run's identity (:meth:`privfed.config.ExperimentConfig.short_hash`) covers the content of
the data files it reads, so two data directories or two versions of a site's file give two
runs, and the same content at two paths gives one. A file with a dataset's official
content (its published MD5, compressed or not) reads ``"official"`` wherever it lies, as
does a missing one (a download is checked against that MD5); any other content reads
``"sha256:<hex>"``. The embedded datasets read no file.

Digests are cached per file and (device, inode, size, modification time), so a file is
read once per process however often the identity is asked for.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from privfed.data.locate import find_file, resolve_data_dir, search_dirs
from privfed.data.medmnist import MEDMNIST_SPECS, SUBDIR
from privfed.data.mnist import IDX_SPECS

__all__ = ["builtin_data_tokens", "file_token", "module_token", "site_data_tokens"]

OFFICIAL = "official"
ABSENT = "absent"

_cache: dict[tuple[str, bool, int, int, int, int], tuple[str, str]] = {}


def file_token(path: Path | None, official_md5: Sequence[str] = ()) -> str:
    """``"official"`` for a file whose MD5 is one of ``official_md5`` or, when there is an
    official MD5, for a missing file; ``"absent"`` for another missing file;
    ``"sha256:<hex>"`` of the content otherwise. A ``.gz`` file is judged by what it
    decompresses to (the gzip wrapper, e.g. its timestamp, does not change what is read)
    unless it is the official file itself."""
    if path is None or not path.is_file():
        return OFFICIAL if official_md5 else ABSENT
    md5, sha256 = _digests(path, gz=False)
    if md5 in official_md5:
        return OFFICIAL
    if path.suffix == ".gz":
        md5, sha256 = _digests(path, gz=True)
    return OFFICIAL if md5 in official_md5 else f"sha256:{sha256}"


def _digests(path: Path, *, gz: bool) -> tuple[str, str]:
    """MD5 and SHA-256 of ``path``'s content (decompressed with ``gz``), cached."""
    stat = path.stat()
    key = (str(path.resolve()), gz, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with (gzip.open if gz else open)(path, "rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                md5.update(block)
                sha256.update(block)
        _cache[key] = (md5.hexdigest(), sha256.hexdigest())
    return _cache[key]


def builtin_data_tokens(name: str, data_dir: str | os.PathLike[str] | None) -> list[str]:
    """The tokens of the files a built-in dataset is read from (none for the embedded ones),
    found as its loader finds them in ``data_dir``."""
    root = resolve_data_dir(data_dir)
    if name in IDX_SPECS:
        spec = IDX_SPECS[name]
        dirs = search_dirs(root, spec.subdir)
        tokens = []
        for remote in spec.remote_files():
            raw = spec.raw_md5.get(remote.aliases[0])
            tokens.append(file_token(find_file(dirs, remote),
                                     [remote.md5, *([raw] if raw else [])]))
        return tokens
    if name in MEDMNIST_SPECS:
        remote = MEDMNIST_SPECS[name].remote_file
        path = root if root.is_file() else find_file(search_dirs(root, SUBDIR), remote)
        return [file_token(path, [remote.md5])]
    return []


def site_data_tokens(dataset: str, paths: Sequence[str]) -> list[str]:
    """The tokens of a site's files, in the order given (client order for one file per
    client): a file's content, every file of an image folder with its relative name, or
    for ``dataset = "python"`` the source file of the function's module (not the files
    the function itself reads)."""
    if dataset == "python":
        return [module_token(path) for path in paths]
    return [_folder_token(Path(p)) if Path(p).is_dir() else file_token(Path(p)) for p in paths]


def _folder_token(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{file_token(path)}\n".encode())
    return f"folder:{digest.hexdigest()}"


def module_token(import_path: str) -> str:
    """``"module:<token>"`` of the source file of ``import_path``'s module
    (``"package.module:attribute"``), ``"absent"`` where it has none."""
    module = import_path.split(":", 1)[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    if origin is None or not Path(origin).is_file():
        return ABSENT
    return f"module:{file_token(Path(origin))}"
