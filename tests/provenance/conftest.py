"""Provenance tests: every test gets its own machine-wide digest cache (no state shared between tests)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _digest_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "digest-cache"))
