"""Checksummed downloads: fetch to a temporary file, verify, then rename atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from privfed.data.errors import ChecksumError

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def md5_bytes(data: bytes) -> str:
    """Return the hex MD5 digest of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path) -> str:
    """Return the hex MD5 digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Write the body of ``url`` to ``dest``.

    Parameters
    ----------
    url : str
        HTTP(S) address.
    dest : pathlib.Path
        File to write.
    timeout : float
        Socket timeout in seconds.

    Raises
    ------
    OSError
        On any network failure (``urllib.error.URLError`` and ``TimeoutError``
        are subclasses).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "privfed"})
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def download_file(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` and check its MD5 before making it visible.

    The body goes to a temporary file next to ``dest``, which is renamed onto
    ``dest`` only when its MD5 equals ``md5``. On any failure the temporary
    file and the directories this call created are removed, so no partial or
    corrupt file (nor an empty cache folder) is left behind.

    Parameters
    ----------
    url : str
        Source address.
    dest : pathlib.Path
        Final location; parent directories are created.
    md5 : str
        Expected hex MD5 of the downloaded file.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    OSError
        If the download fails.
    ChecksumError
        If the downloaded file's MD5 differs from ``md5``.
    """
    created = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        fetch_url(url, tmp)
        actual = md5_file(tmp)
        if actual != md5:
            raise ChecksumError(
                f"checksum mismatch for {dest.name} downloaded from {url}: "
                f"expected MD5 {md5}, got {actual}; the file was discarded"
            )
        os.replace(tmp, dest)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        for folder in created:  # deepest first; only folders this call created
            with contextlib.suppress(OSError):  # absent, or filled by someone else
                folder.rmdir()
        raise
    return dest
