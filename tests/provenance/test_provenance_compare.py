"""`dream-hpc compare` and `dream-hpc reproduce`'s drift checks on runs with real FITS products."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from _provenance_fixtures import UNITS, consolidated_run

from dream_hpc.cli import main
from dream_hpc.provenance.compare_products import compare_arrays

CAL = f"exposures/{UNITS[0]}_cal.fits"


@pytest.fixture
def run_a(tmp_path: Path):
    return consolidated_run(tmp_path, "a", date="2025-01-01T00:00:00")


def _compare(a, b, capsys, *extra: str) -> tuple[int, str]:
    rc = main(["compare", str(a.provenance), str(b.root), *extra])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_identical_runs_in_other_directories_reproduce(run_a, tmp_path: Path, capsys) -> None:
    run_b = consolidated_run(tmp_path, "b", ranks=2, date="2026-06-06T12:00:00")  # other dir, other ranks, other DATE
    assert (run_a.root / CAL).read_bytes() != (run_b.root / CAL).read_bytes()  # headers differ
    rc, out = _compare(run_a, run_b, capsys, "--json", str(tmp_path / "cmp.json"))
    assert rc == 0, out
    for section in ("software", "references", "parameters", "seeds"):
        assert any(line.startswith(section) and "identical" in line for line in out.splitlines()), section
    assert "10 compared: 10 identical" in out and "REPRODUCED: every science array bit-identical" in out
    assert json.loads((tmp_path / "cmp.json").read_text())["reproduced"] is True


def test_one_pixel_different_is_reported_with_where_and_how_much(run_a, tmp_path: Path, capsys) -> None:
    run_b = consolidated_run(tmp_path, "b", pixel_offset=0.25)
    rc, out = _compare(run_a, run_b, capsys)
    assert rc == 1
    assert "9 identical, 1 different" in out and f"different: {CAL}" in out
    assert "SCI: DIFFERENT, 1 of 256 pixels differ, max abs 0.25 at [3, 4]" in out
    assert f"NOT REPRODUCED: 1 product(s) differ ({CAL})" in out


def test_difference_within_jwst_tolerance_still_reproduces(run_a, tmp_path: Path, capsys) -> None:
    run_b = consolidated_run(tmp_path, "b", pixel_offset=2e-6)  # ~1 ulp of a float32 near 1: below rtol 1e-5
    rc, out = _compare(run_a, run_b, capsys)
    assert rc == 0, out
    assert "1 within tolerance" in out and "SCI: within tolerance, 1 of 256 pixels differ" in out
    assert "equal within rtol 1e-05, atol 1e-07" in out


def test_changed_parameter_is_named(run_a, tmp_path: Path, capsys) -> None:
    run_b = consolidated_run(tmp_path, "b", jump_threshold=4.0)
    rc, out = _compare(run_a, run_b, capsys)
    assert rc == 1
    assert "config pipeline.detector1.jump.rejection_threshold: 5.0 (A) vs 4.0 (B)" in out
    assert "detector1 jump.rejection_threshold: 5.0 (A) vs 4.0 (B) in 3 unit stage(s)" in out


def _set_packages(path: Path, changes: dict[str, str]) -> None:
    with h5py.File(path, "a") as h5:
        rows = h5["run/packages"][()]
        for row in rows:
            if row["name"].decode() in changes:
                row["version"] = changes[row["name"].decode()].encode()
        h5["run/packages"][...] = rows


def test_software_and_reference_drift_are_named(run_a, tmp_path: Path, capsys) -> None:
    run_b = consolidated_run(tmp_path, "b")
    _set_packages(run_b.provenance, {"jwst": "9.9.9"})
    with h5py.File(run_b.provenance, "a") as h5:
        rows = h5[f"units/{UNITS[0]}/detector1/refs"][()]
        rows[0]["sha256"] = b"f" * 64
        h5[f"units/{UNITS[0]}/detector1/refs"][...] = rows
    rc, out = _compare(run_a, run_b, capsys)
    assert "software    DIFFER (1)" in out and "jwst: " in out and "9.9.9 (B)" in out
    assert "(same name, different content" in out
    assert rc == 0 and "despite software/reference differences" in out  # the pixels still match


def test_compare_arrays_integer_must_be_exact() -> None:
    a = np.zeros((4, 4), np.uint32)
    b = a.copy()
    b[1, 2] = 1
    verdict, text = compare_arrays(a, b, "DQ")
    assert verdict == "different" and "must match exactly" in text and "[1, 2]" in text
    f = np.ones(5, np.float32)
    g = f.copy()
    f[2] = g[2] = np.nan
    assert compare_arrays(f, g, "SCI")[0] == "identical"  # NaN where both are NaN is equal


def test_reproduce_refuses_on_drift_and_names_it(run_a, tmp_path: Path, capsys) -> None:
    _set_packages(run_a.provenance, {"jwst": "0.0.1"})
    out = tmp_path / "r2"
    rc = main(["reproduce", str(run_a.provenance), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "drift: software: jwst: recorded 0.0.1, installed" in err
    assert "--allow-drift" in err and not out.exists()


def test_reproduce_checks_reference_caches(run_a, tmp_path: Path, capsys) -> None:
    (tmp_path / "refkit/crds_cache/references/jwst/nircam/extra.fits").write_bytes(b"new")
    rc = main(["reproduce", str(run_a.provenance), "--out", str(tmp_path / "r2"), "--check-only"])
    err = capsys.readouterr().err
    assert rc == 2 and "drift: references: CRDS cache" in err and "MIRAGE_DATA" not in err


def test_reproduce_writes_config_with_absolute_paths_and_records_allowed_drift(run_a, tmp_path: Path,
                                                                               capsys) -> None:
    from dream_hpc.config import load_config
    from dream_hpc.drivers.reproduce import prepare_reproduction as prepare

    _set_packages(run_a.provenance, {"numpy": "1.0.0"})
    args = type("Args", (), dict(record=str(run_a.root), out=str(tmp_path / "r2"), allow_drift=True, base=None,
                                 crds_path=None, mirage_data=None, catalog=None, check_only=False))()
    config, lines = prepare(args)
    assert any("numpy: recorded 1.0.0" in line for line in lines)
    cfg = load_config(config)
    assert Path(cfg.references.crds_path).is_absolute()
    assert cfg.resolve(cfg.references.crds_path) == (tmp_path / "refkit/crds_cache").resolve()
    assert cfg.pipeline.detector1["jump"]["rejection_threshold"] == 5.0
    facts = json.loads((tmp_path / "r2/reproduce.json").read_text())
    assert facts["allowed_drift"] and facts["drift"] == lines and facts["source"].endswith("provenance.h5")
