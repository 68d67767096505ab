"""Exceptions and warnings raised by :mod:`privfed.data`."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are neither on disk nor downloadable.

    The message names the missing files, the directories searched, how to
    point privfed to another directory and where to download the files.
    """


class DataFormatError(ValueError):
    """A data file is malformed, truncated or holds unexpected content."""


class ChecksumError(ValueError):
    """A downloaded file does not match its official checksum."""


class DataIntegrityWarning(UserWarning):
    """A user-supplied data file is well formed but not the official release."""
