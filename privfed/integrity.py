"""A directory's digest: ``SHA256SUMS``, written last, checked before its files are used.

The file has ``sha256sum``'s format (``<hex digest>  <name>`` per line), so
``sha256sum -c SHA256SUMS`` inside the directory checks it too. It detects a file changed,
truncated, replaced or removed after the directory was finished (an edited
``summary.json``, a copy that mixes two runs); it is not a signature, and someone who
rewrites ``SHA256SUMS`` as well is not detected.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from privfed.atomic import write_text

__all__ = ["DIGEST_FILE", "file_sha256", "listed_files", "verify_digest", "write_digest"]

DIGEST_FILE = "SHA256SUMS"
"""The digest's file name."""

_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>[^/\\]+)$")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_digest(directory: str | os.PathLike[str], names: Iterable[str]) -> Path:
    """Write ``directory/SHA256SUMS`` for the files ``names`` (in that order), atomically.

    Raises
    ------
    FileNotFoundError
        A named file does not exist.
    """
    directory = Path(directory)
    lines = [f"{file_sha256(directory / name)}  {name}\n" for name in names]
    return write_text(directory / DIGEST_FILE, "".join(lines))


def listed_files(directory: str | os.PathLike[str]) -> list[str]:
    """The names ``directory/SHA256SUMS`` lists, in its order (malformed lines left out;
    :func:`verify_digest` reports them)."""
    text = (Path(directory) / DIGEST_FILE).read_text(encoding="utf-8")
    return [m["name"] for m in map(_LINE.match, text.splitlines()) if m is not None]


def verify_digest(directory: str | os.PathLike[str]) -> list[str]:
    """What is wrong with ``directory`` against its ``SHA256SUMS``.

    Returns
    -------
    list of str
        One line per problem (no digest file, a malformed one, a file missing or whose
        content differs, e.g. ``"summary.json: content differs from SHA256SUMS"``); empty
        when every listed file is as it was written.
    """
    directory = Path(directory)
    try:
        text = (directory / DIGEST_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"no {DIGEST_FILE} (unfinished, or written by an older privfed)"]
    except (OSError, UnicodeDecodeError) as err:
        return [f"{DIGEST_FILE}: unreadable ({err})"]
    problems = []
    lines = text.splitlines()
    if not lines:
        return [f"{DIGEST_FILE} is empty"]
    for number, line in enumerate(lines, 1):
        match = _LINE.match(line)
        if match is None:
            problems.append(f"{DIGEST_FILE} line {number} is malformed")
            continue
        try:
            actual = file_sha256(directory / match["name"])
        except OSError:
            problems.append(f"{match['name']}: missing")
            continue
        if actual != match["digest"]:
            problems.append(f"{match['name']}: content differs from {DIGEST_FILE}")
    return problems
