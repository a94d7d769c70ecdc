"""Kills and a full disk in every phase of a survey, each followed by a plain rerun.

One tiny survey (one tile, two dithers, NRCB1 SUB400P: 2 units, 1 mosaic) is run once on a read-only
bind mount of the kit; each case copies that completed run, makes one phase unfinished again (removes
what that phase writes), then reruns `dream-hpc survey` with a fault at that phase through the
documented hook DREAM_HPC_TEST_FAULT (engine/worker.py, core/faults.py):

- kill: SIGKILL of the whole run (rank and worker) at a Mirage phase or jwst step that writes a
  product (`obs_generator`, `save`), inside Image3, or inside the write of provenance.h5/summary.json;
- full: the small tmpfs holding the run is filled at that point, so the real writes meet ENOSPC.

Then the space is freed and the same command is run again, plainly. It must finish, redo only what was
unfinished (the other unit is never restarted, its products untouched), leave no temporary file, and
pass `dream-hpc audit`. The reference kit is never written to (read-only mount, and its files' sizes
and mtimes are unchanged at the end).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _chain_fixtures import cli, demo_like, write_config
from _fault_fixtures import bind_read_only, mount_tmpfs, snapshot, unmount

from dream_hpc.core.digests import sha256_file
from dream_hpc.core.faults import FILL_NAME
from dream_hpc.core.journal import journal_files, read_file

pytestmark = [pytest.mark.slow]
FAULT = "DREAM_HPC_TEST_FAULT"
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def ro_kit(tmp_path_factory: pytest.TempPathFactory, refkit_dir: Path) -> Iterator[Path]:
    """The shared kit behind a read-only bind mount (as a cluster's reference cache is), when we may
    mount; else the kit itself (the snapshot check below still catches any write)."""
    target = tmp_path_factory.mktemp("kit-ro")
    mounted = IS_ROOT and bind_read_only(refkit_dir.resolve(), target)
    yield target if mounted else refkit_dir
    if mounted:
        unmount(target)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, ro_kit: Path) -> dict:
    d = tmp_path_factory.mktemp("faults")
    cfg = demo_like(ro_kit, d / "catalog.ecsv",
                    pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                    instrument={"detectors": ["NRCB1"], "readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}})
    config = write_config(d, cfg)
    kit_before = snapshot(ro_kit)
    run = d / "run"
    proc = cli(["survey", str(config), "--out", str(run)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    units = [u["unit_id"] for u in json.loads((run / "plan.json").read_text())["units"]]
    assert len(units) == 2
    return {"config": config, "run": run, "units": units, "kit": ro_kit, "kit_before": kit_before}


def _records(run: Path) -> list[dict]:
    out = []
    for f in journal_files(run / "journal"):
        jf = read_file(f)
        out.extend(jf.records)
    return sorted(out, key=lambda r: r["time"])


def _last_attempt(run: Path) -> list[dict]:
    recs = _records(run)
    start = max(r["time"] for r in recs if r["kind"] == "run_start")
    return [r for r in recs if r["time"] >= start]


# phase -> (fault spec with {unit} and {action}, files (relative to the run) that make it unfinished)
def _phase(phase: str, unit: str) -> tuple[str, list[str]]:
    exp = "exposures/" + unit
    return {
        "simulate": (f"{unit}:simulate:obs_generator", [f"{exp}_uncal.fits", f"{exp}_rate.fits", f"{exp}_cal.fits"]),
        "detector1": (f"{unit}:detector1:save", [f"{exp}_rate.fits", f"{exp}_cal.fits"]),
        "image2": (f"{unit}:image2:save", [f"{exp}_cal.fits"]),
        "mosaic": ("F150W:mosaic:resample", ["mosaic/*_i2d.fits"]),
        "provenance": ("run:provenance", ["provenance.h5"]),
        "summary": ("run:summary", ["summary.json"]),
    }[phase]


PHASES = ("simulate", "detector1", "image2", "mosaic", "provenance", "summary")


@pytest.mark.parametrize("action", ["kill", "full"])
@pytest.mark.parametrize("phase", PHASES)
def test_fault_then_plain_rerun_finishes(base: dict, tmp_path: Path, phase: str, action: str) -> None:
    if action == "full" and not IS_ROOT:
        pytest.skip("a full disk needs a small tmpfs: mounting one needs root (CI runs as root)")
    where = tmp_path / "fs"
    where.mkdir()
    if action == "full":
        mount_tmpfs(where, "160m")
    try:
        _case(base, where, phase, action)
    finally:
        if action == "full":
            unmount(where)


def _case(base: dict, where: Path, phase: str, action: str) -> None:
    run = where / "run"
    shutil.copytree(base["run"], run, symlinks=True)
    keep, redo = base["units"]
    spec, unfinished = _phase(phase, redo)
    for pattern in unfinished:
        for p in run.glob(pattern):
            p.unlink()
    kept = {p: sha256_file(p) for p in (run / "exposures").glob(f"{keep}_*.fits")}
    config = str(base["config"])

    faulted = cli(["survey", config, "--out", str(run)], env={FAULT: f"{spec}:{action}"}, timeout=600)
    said = faulted.stdout + faulted.stderr
    if action == "kill":
        assert faulted.returncode == -9, said[-3000:]
    else:
        # Either the unit (or mosaic) fails naming ENOSPC and the run goes on (space freed by its
        # scratch files lets the journal record it), or the run cannot even journal and stops with
        # one line; never a traceback.
        assert faulted.returncode in (1, 2), said[-3000:]
        assert "Traceback" not in said, said[-3000:]
        assert "No space left on device" in said, said[-3000:]
        if faulted.returncode == 2:
            lines = faulted.stderr.strip().splitlines()
            assert len(lines) == 1, said[-3000:]  # one line, even when h5py's own report spans several
            assert "No space left on device" in lines[0] and "rerun the same command" in lines[0], said[-3000:]
        (where / FILL_NAME).unlink()  # the user frees space

    rerun = cli(["survey", config, "--out", str(run)], timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    attempt = _last_attempt(run)
    restarted = {r["unit"] for r in attempt if r["kind"] == "unit_start"}
    mosaics = {r["data"]["filter"] for r in attempt if r["kind"] == "mosaic_start"}
    if phase in ("simulate", "detector1", "image2"):
        assert restarted == {redo}, restarted  # only the unit whose phase was unfinished
    else:
        assert not restarted, restarted
    if phase == "mosaic":
        assert mosaics == {"F150W"}
    elif phase in ("provenance", "summary"):
        assert not mosaics  # a finished mosaic whose inputs did not change is verified, not redone
    assert {p: sha256_file(p) for p in kept} == kept  # the finished unit was not touched
    leftovers = [p for p in run.rglob(".tmp-*")] + list(where.glob(FILL_NAME))
    assert not leftovers, leftovers
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_done"] == 2 and not summary["failures"]
    audit = cli(["audit", str(run)])
    assert audit.returncode == 0 and "audit: OK" in audit.stdout, audit.stdout[-3000:] + audit.stderr[-2000:]


def test_read_only_kit_was_never_written(base: dict) -> None:
    """After the whole matrix (this test runs last in the module), the kit is as it was."""
    if IS_ROOT:
        probe = base["kit"] / "crds_cache" / ".probe"
        with pytest.raises(OSError):
            probe.write_text("x")  # the bind mount really is read-only
    assert snapshot(base["kit"]) == base["kit_before"]
