"""`dream-hpc versions --check`: the installed environment against the hashed lock file."""

from __future__ import annotations

import re
from pathlib import Path

from _cache_fixtures import ROOT, run_cli

LOCK = ROOT / "requirements.lock"


def test_check_passes_on_this_venv() -> None:
    done = run_cli("versions", "--check")
    assert done.returncode == 0, done.stderr
    n_pins = len(re.findall(r"^[A-Za-z0-9_.\-]+==", LOCK.read_text(), flags=re.M))
    assert f"all {n_pins} locked packages match" in done.stdout
    assert re.search(r"^jwst\s+3\.0\.0\s", done.stdout, flags=re.M)


def _lock_with(tmp_path: Path, old: str, new: str) -> Path:
    text = LOCK.read_text()
    assert re.search(old, text, flags=re.M), old
    lock = tmp_path / "requirements.lock"
    lock.write_text(re.sub(old, new, text, count=1, flags=re.M))
    return lock


def test_check_names_a_package_at_another_version(tmp_path: Path) -> None:
    lock = _lock_with(tmp_path, r"^stcal==[^\s;\\]+", "stcal==1.1.0")  # the seed notes' clash
    done = run_cli("versions", "--check", "--lock", str(lock))
    assert done.returncode == 1
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("version mismatch")]
    assert errors == ["version mismatch: stcal: locked 1.1.0, installed 1.20.0"]
    assert "1 package(s) differ" in done.stderr and str(lock) in done.stderr


def test_check_names_a_missing_package(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK.read_text() + "\nnot-a-real-package-xyz==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    done = run_cli("versions", "--check", "--lock", str(lock))
    assert done.returncode == 1
    assert "version mismatch: not-a-real-package-xyz: locked 1.0, not installed" in done.stderr
