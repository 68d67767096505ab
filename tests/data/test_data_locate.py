"""Tests for data-directory resolution and checksummed downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import platformdirs
import pytest

from privfed.data import ChecksumError, download, resolve_data_dir
from privfed.data.download import download_file


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVFED_DATA", raising=False)
    assert resolve_data_dir() == Path(platformdirs.user_cache_dir("privfed"))
    monkeypatch.setenv("PRIVFED_DATA", "")
    assert resolve_data_dir() == Path(platformdirs.user_cache_dir("privfed"))
    monkeypatch.setenv("PRIVFED_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    assert not (tmp_path / "env").exists()


def serve(monkeypatch: pytest.MonkeyPatch, body: bytes, *, fail_after_write: bool = False) -> None:
    def fetch(url: str, dest: Path, timeout: float = 0.0) -> None:
        dest.write_bytes(body)
        if fail_after_write:
            raise TimeoutError("connection stalled")

    monkeypatch.setattr(download, "fetch_url", fetch)


def test_download_file_verifies_md5_and_renames(tmp_path: Path, monkeypatch) -> None:
    body = b"payload" * 100
    serve(monkeypatch, body)
    dest = tmp_path / "sub" / "file.gz"
    assert (
        download_file("https://example.invalid/file.gz", dest, hashlib.md5(body).hexdigest())
        == dest
    )
    assert dest.read_bytes() == body
    assert [p.name for p in dest.parent.iterdir()] == ["file.gz"]


def test_download_file_wrong_md5_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    serve(monkeypatch, b"tampered")
    with pytest.raises(
        ChecksumError,
        match=r"file\.gz downloaded from https://example\.invalid/f.*expected MD5 0{32}, got",
    ):
        download_file("https://example.invalid/f", tmp_path / "new" / "file.gz", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_download_file_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    serve(monkeypatch, b"partial", fail_after_write=True)
    with pytest.raises(TimeoutError):
        download_file("https://example.invalid/f", tmp_path / "file.gz", "0" * 32)
    assert list(tmp_path.iterdir()) == []
