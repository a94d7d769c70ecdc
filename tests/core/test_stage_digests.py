"""The chain's file digests: hashed once per file version, never stale after a rewrite or truncation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from dream_hpc.core import digests


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_digest_follows_every_new_version_of_a_file(tmp_path: Path) -> None:
    product = tmp_path / "x_rate.fits"
    product.write_bytes(b"a" * 5760)
    first = digests.file_sha256(product)
    assert first == _sha(b"a" * 5760)
    assert digests.file_sha256(product) == first  # remembered, same answer

    os.truncate(product, 2880)  # a damaged product must never be recorded with the old digest
    assert digests.file_sha256(product) == _sha(b"a" * 2880)

    replacement = tmp_path / "new"
    replacement.write_bytes(b"b" * 2880)  # same size, replaced by rename (as atomic_path does)
    os.replace(replacement, product)
    assert digests.file_sha256(product) == _sha(b"b" * 2880)


def test_big_references_are_hashed_once_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "digests"))
    monkeypatch.setenv("MIRAGE_DATA", str(tmp_path / "kit"))
    monkeypatch.delenv("CRDS_PATH", raising=False)
    monkeypatch.setattr(digests, "PERSISTENT_DIGEST_BYTES", 1000)
    (tmp_path / "kit").mkdir()
    big, small = tmp_path / "kit" / "dark.fits", tmp_path / "kit" / "photom.fits"
    product = tmp_path / "run_uncal.fits"  # big, but a run's product: not kept machine-wide
    big.write_bytes(b"d" * 2000)
    small.write_bytes(b"p" * 10)
    product.write_bytes(b"u" * 3000)
    assert digests.file_sha256(big) == _sha(b"d" * 2000)
    assert digests.file_sha256(small) == _sha(b"p" * 10)
    assert digests.file_sha256(product) == _sha(b"u" * 3000)
    cached = json.loads((tmp_path / "digests" / "digests.json").read_text())
    assert list(cached.values()) == [_sha(b"d" * 2000)]  # only the big reference is kept across processes
