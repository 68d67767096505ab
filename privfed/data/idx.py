"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).

An IDX file starts with a 4-byte big-endian magic number ``0x00 0x00 <type>
<ndim>`` (type ``0x08`` = unsigned byte), then ``ndim`` big-endian ``uint32``
dimensions, then the payload in C order. Image files have magic 2051
(``0x00000803``: uint8, 3 dims), label files 2049 (``0x00000801``: uint8, 1 dim).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from privfed.data.errors import DataFormatError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx_bytes(path: Path) -> bytes:
    """Return the uncompressed content of an IDX file (gzip detected by its magic bytes).

    Parameters
    ----------
    path : pathlib.Path
        ``.gz`` or raw IDX file.

    Returns
    -------
    bytes
        The raw IDX bytes.

    Raises
    ------
    DataFormatError
        If the gzip stream is corrupt or truncated.
    """
    data = path.read_bytes()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, *, source: str, magic: int) -> np.ndarray:
    """Parse raw IDX bytes into a ``uint8`` array.

    Parameters
    ----------
    data : bytes
        Uncompressed IDX content.
    source : str
        File name used in error messages.
    magic : int
        Expected magic number: :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array shaped by the header's dimensions.

    Raises
    ------
    DataFormatError
        If the magic number differs, the header is short, or the payload length
        is not the product of the dimensions (truncated or padded file).
    """
    if len(data) < 4:
        raise DataFormatError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        allowed = f"{IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels)"
        raise DataFormatError(
            f"{source}: bad IDX magic number {found}, expected {magic}; "
            f"MNIST-style IDX files use {allowed}"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(
            f"{source}: truncated IDX header, expected {header} bytes, got {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise DataFormatError(
            f"{source}: IDX payload {kind}: dims {dims} need {expected} bytes, got {actual}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
