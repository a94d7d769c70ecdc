"""The demo-sized test survey on a real Slurm, shared by tests/test_slurm.py (one node) and
tests/test_slurm_nodes.py (several nodes): its config, submitting it, and reading its journal."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from dream_hpc.core.journal import ordered_records, read_journal

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "slurm"
VENV = Path(sys.executable).parent.parent  # the venv running these tests holds dream-hpc
JOB_TIMEOUT_S = 1200
ONE_NODE = ("--nodes=1", "--ntasks-per-node=2")


@dataclass
class Submission:
    survey_job: str
    image3_job: str
    run: Path
    workdir: Path
    wall_s: float = 0.0
    states: dict[str, str] | None = None

    def log(self, job: str, name: str = "dream-survey") -> str:
        path = self.workdir / f"{name}-{job}.out"
        return path.read_text() if path.exists() else ""


def _config(directory: Path, kit: Path) -> Path:
    """tests/data/small_survey.yaml cut to one tile, 4 dithers, NRCB1 only (4 units in F150W), a short readout."""
    cfg = yaml.safe_load((ROOT / "tests" / "data" / "small_survey.yaml").read_text())
    cfg["references"].update(crds_path=str(kit / "crds_cache"), mirage_data=str(kit / "mirage_data"))
    cfg["catalog"]["path"] = "catalog.ecsv"
    cfg["pointings"].update(rows=1, cols=1, dither={"points": 4, "step_arcsec": 1.0, "pattern": "line"})
    cfg["instrument"].update(detectors=["NRCB1"], readout={"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "survey.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "dream_hpc", "catalog", "synth", str(path), "--out",
                           str(directory / "catalog.ecsv"), "--overwrite"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="session")
def slurm_config(tmp_path_factory: pytest.TempPathFactory, refkit_dir: Path) -> Path:
    return _config(tmp_path_factory.mktemp("slurm-config"), refkit_dir)


def submit(cluster, config: Path, run: Path, workdir: Path, *, shape: tuple[str, ...] = ONE_NODE,
           **env: str) -> Submission:
    """`sbatch slurm/full_survey.sh` with `shape` (nodes and tasks), waited for until it has queued
    its Image3 job."""
    workdir.mkdir(parents=True, exist_ok=True)
    job = cluster.sbatch(*shape, "--mem-per-cpu=3G", "--time=30",
                         str(SLURM / "full_survey.sh"), cwd=workdir,
                         env={"DREAM_CONFIG": str(config), "DREAM_RUN": str(run), "DREAM_VENV": str(VENV),
                              "DREAM_IMAGE3_MEM": "3G", "DREAM_IMAGE3_TIME": "30", **env})
    record = run / "logs" / "slurm" / "image3.job"
    cluster.wait_for(lambda: record.exists() and record.read_text().split()[1:2] == [job], 120,
                     f"job {job} to queue its Image3 job")
    return Submission(job, record.read_text().split()[0], run, workdir)


def journal_records(run: Path) -> list[dict]:
    return ordered_records(read_journal(run / "journal")) if (run / "journal").is_dir() else []


def units_done(run: Path) -> set[str]:
    return {r["unit"] for r in journal_records(run) if r["kind"] == "unit_done"}


def assert_each_unit_done_once(run: Path, n_units: int = 4) -> None:
    records = journal_records(run)
    done = collections.Counter(r["unit"] for r in records if r["kind"] == "unit_done")
    stages = collections.Counter((r["unit"], r["data"]["stage"]) for r in records if r["kind"] == "stage_done")
    assert len(done) == n_units and set(done.values()) == {1}, f"units finished more than once: {done}"
    assert set(stages.values()) == {1}, f"stages computed more than once: {stages}"


def assert_mosaic_and_audit(run: Path) -> None:
    mosaics = list((run / "mosaic").glob("*_i2d.fits"))
    assert mosaics, f"no mosaic in {run / 'mosaic'}"
    for suffix in ("_segm.fits", "_cat.ecsv"):
        assert list((run / "mosaic").glob(f"*{suffix}")), f"no *{suffix} in {run / 'mosaic'}"
    audit = subprocess.run([sys.executable, "-m", "dream_hpc", "audit", str(run)], capture_output=True, text=True,
                           timeout=600)
    assert audit.returncode == 0, f"audit failed:\n{audit.stdout}\n{audit.stderr}"


@pytest.fixture(scope="session")
def slurm_survey(local_slurm, slurm_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Submission:
    """One survey through `sbatch slurm/full_survey.sh`, waited for (both jobs)."""
    base = tmp_path_factory.mktemp("slurm-survey")
    t0 = time.monotonic()
    sub = submit(local_slurm, slurm_config, base / "run", base)
    sub.states = local_slurm.wait([sub.survey_job, sub.image3_job], JOB_TIMEOUT_S)
    sub.wall_s = time.monotonic() - t0
    print(f"\nlocal Slurm up in {local_slurm.start_s:.1f} s; sbatch -> both jobs done in {sub.wall_s:.0f} s")
    return sub


def assert_bit_identical(a: Path, b: Path) -> str:
    """`dream-hpc compare A B` finds every science array bit-identical (provenance.h5 in both)."""
    res = subprocess.run([sys.executable, "-m", "dream_hpc", "compare", str(a), str(b)], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f"dream-hpc compare:\n{res.stdout}\n{res.stderr}"
    assert "REPRODUCED: every science array bit-identical" in res.stdout, res.stdout
    for section in ("references", "inputs", "parameters", "seeds", "units"):
        assert f"\n{section}" in res.stdout and any(
            ln.split()[1:2] == ["identical"] for ln in res.stdout.splitlines() if ln.startswith(section)), res.stdout
    return res.stdout
