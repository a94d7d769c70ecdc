"""Provenance of real runs (Mirage + jwst, the real engine): a rank SIGKILLed then resumed leaves a
complete, auditable record; `reproduce` with 1 rank, from the record alone carried elsewhere with the kit
and catalog at other paths, gives bit-identical uncal, rate, cal and i2d science arrays to the original
made with 2 ranks (by the recorded science digests, and by the arrays with the original's files).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from _engine_fixtures import MPIEXEC, dream_run, engine_env, wait_for

from dream_hpc.config import load_config
from dream_hpc.core.journal import journal_files, read_file
from dream_hpc.provenance import read as prov_read
from dream_hpc.provenance.prov_json import validate

pytestmark = [pytest.mark.slow, pytest.mark.mpi]
ROOT = Path(__file__).resolve().parents[2]
UNIT_PRODUCTS = ("_uncal.fits", "_rate.fits", "_cal.fits")


def env(tmp: Path) -> dict[str, str]:
    # a fixed commit: the checkout may move while the session runs, which reproduce would call drift
    return engine_env(DREAM_HPC_GIT_COMMIT="e2e-test", DREAM_HPC_CACHE_DIR=str(tmp / "digests"))


def cli(args: list[str], tmp: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dream_hpc", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(tmp), cwd=ROOT)


@dataclass
class KilledRun:
    config: Path
    run: Path
    before: dict  # provenance view consolidated right after the kill
    tmp: Path


@pytest.fixture(scope="session")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory, refkit_dir: Path) -> KilledRun:
    """Two units (NRCB1 F150W, 2 dithers) under mpiexec -n 2; rank 1 SIGKILLed inside a step; plain rerun."""
    tmp = tmp_path_factory.mktemp("prov-e2e")
    cfg = yaml.safe_load((ROOT / "tests/data/small_survey.yaml").read_text())
    cfg["references"].update(crds_path=str(refkit_dir / "crds_cache"), mirage_data=str(refkit_dir / "mirage_data"))
    cfg["catalog"]["path"] = str(tmp / "catalog.ecsv")
    cfg["pointings"].update(rows=1, cols=1, dither={"points": 2, "step_arcsec": 1.0, "pattern": "line"})
    cfg["instrument"].update(detectors=["NRCB1"], readout={"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1})
    config = tmp / "survey.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    synth = cli(["catalog", "synth", str(config), "--out", str(tmp / "catalog.ecsv"), "--overwrite"], tmp)
    assert synth.returncode == 0, synth.stderr

    run = tmp / "A"
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "dream_hpc", "run", str(config), "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(tmp), cwd=ROOT)
    try:
        def rank1_inside_a_step() -> int | None:
            for f in journal_files(run / "journal") if (run / "journal").is_dir() else []:
                recs = read_file(f).records
                if recs and recs[-1]["rank"] == 1 and recs[-1]["kind"] == "step" \
                        and recs[-1]["data"].get("status") == "start" and recs[-1]["data"].get("stage") != "simulate":
                    return recs[-1]["pid"]
            return None

        os.kill(wait_for(rank1_inside_a_step, 600, "rank 1 inside a jwst step", 0.2), signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    consolidated = cli(["provenance", str(run)], tmp)
    assert consolidated.returncode == 0, consolidated.stderr
    before = prov_read.load(run)
    rerun = dream_run(config, run, None, env=env(tmp))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    consolidated = cli(["provenance", str(run)], tmp)
    assert consolidated.returncode == 0, consolidated.stderr
    return KilledRun(config, run, before, tmp)


def test_killed_rank_record_is_complete_after_resume(killed_and_resumed: KilledRun) -> None:
    before = killed_and_resumed.before
    assert before["run"]["status"] == "incomplete" and len(before["attempts"]) == 1
    cut = {uid: name for uid, u in before["units"].items() for name, st in u["stages"].items()
           if st["attrs"]["status"] == "incomplete"}
    assert cut, "the kill should leave a stage recorded as incomplete"

    after = prov_read.load(killed_and_resumed.run)
    assert [a["number"] for a in after["attempts"]] == [1, 2]
    assert after["attempts"][0]["status"] == "incomplete" and after["attempts"][0]["mpi_size"] == 2
    assert after["attempts"][1]["status"] == "ok" and after["attempts"][1]["mpi_size"] == 1
    assert {u["attrs"]["status"] for u in after["units"].values()} == {"done"}
    for uid, stage in cut.items():  # redone in attempt 2, the interruption kept in the unit's history
        assert after["units"][uid]["stages"][stage]["attrs"]["attempt"] == 2
    assert after["mosaics"]["F150W"]["attrs"]["status"] == "done"
    asn = after["mosaics"]["F150W"]["asn"]
    assert isinstance(asn, dict) and len(asn["products"][0]["members"]) == 2  # the association itself
    det1 = next(iter(after["units"].values()))["stages"]["detector1"]
    assert det1["refs"]["dark"][0].startswith("crds://") and len(det1["refs"]["dark"][1]) == 64
    assert "jump" in det1["params"]["steps"]  # the final applied parameters, per step

    audit = cli(["audit", str(killed_and_resumed.run), "--prov-json", str(killed_and_resumed.tmp / "prov.json")],
                killed_and_resumed.tmp)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "units       2: 2 done" in audit.stdout and "audit: OK" in audit.stdout
    assert validate(json.loads((killed_and_resumed.tmp / "prov.json").read_text())) == []


def test_one_byte_of_a_real_product_changed_is_named(killed_and_resumed: KilledRun, tmp_path: Path) -> None:
    copy = tmp_path / "A"
    shutil.copytree(killed_and_resumed.run, copy)
    cal = sorted((copy / "exposures").glob("*_cal.fits"))[0]
    data = bytearray(cal.read_bytes())
    data[len(data) // 2] ^= 0x40
    cal.write_bytes(bytes(data))
    audit = cli(["audit", str(copy)], killed_and_resumed.tmp)
    assert audit.returncode == 1
    assert f"modified: exposures/{cal.name}" in audit.stderr and audit.stderr.count("modified:") == 1


def _at_another_path(src: Path, dst: Path) -> None:
    """A directory tree at another path, as if copied to another cluster, in no time and no space:
    real directories with a symlink per file (so the new path does not resolve back to the old one,
    and the original kit's files are not touched, not even their link counts)."""
    shutil.copytree(src, dst, copy_function=lambda s, d: os.symlink(os.path.realpath(s), d))


def _flip_science_byte(path: Path) -> None:
    """Change one SCI pixel of a FITS product by a factor of 4 (its exponent byte), so it truly differs."""
    import numpy as np
    from astropy.io import fits

    with fits.open(path, memmap=False) as f:
        flat = np.asarray(f["SCI"].data).ravel()
        offset = f["SCI"].fileinfo()["datLoc"]
        itemsize = flat.dtype.itemsize
    usable = np.flatnonzero(np.isfinite(flat) & (np.abs(flat) > 1e-3))
    data = bytearray(path.read_bytes())
    data[offset + int(usable[len(usable) // 2]) * itemsize] ^= 0x01  # big-endian: sign and exponent first
    path.write_bytes(bytes(data))


def test_reproduce_elsewhere_from_the_record_alone(killed_and_resumed: KilledRun, refkit_dir: Path) -> None:
    """The record carried alone to "another cluster" (kit and catalog at other paths, the first run's
    products absent): reproduced with 1 rank, checked by the recorded science digests; then the same
    run checked against A's run directory (arrays), and with one science byte of B changed."""
    tmp, run_a = killed_and_resumed.tmp, killed_and_resumed.run
    there = tmp / "cluster2"
    there.mkdir()
    record = there / "A.h5"
    shutil.copy2(run_a / "provenance.h5", record)
    _at_another_path(refkit_dir, there / "kit")
    shutil.copy2(tmp / "catalog.ecsv", there / "catalog.ecsv")
    photometry = Path(load_config(tmp / "survey.yaml").catalog.photometry)  # DREaM's second table, if any
    photometry = photometry if photometry.is_absolute() else (tmp / photometry).resolve()
    extra = []
    if photometry.is_file():
        shutil.copy2(photometry, there / photometry.name)
        extra = ["--photometry", str(there / photometry.name)]
    out = there / "R"
    rep = cli(["reproduce", str(record), "--out", str(out), "--crds-path", str(there / "kit/crds_cache"),
               "--mirage-data", str(there / "kit/mirage_data"), "--catalog", str(there / "catalog.ecsv"), *extra], tmp)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    for key, flag in (("references.crds_path", "--crds-path"), ("references.mirage_data", "--mirage-data"),
                      ("catalog.path", "--catalog"), *([("catalog.photometry", "--photometry")] if extra else [])):
        assert f"reproduce: remapped {key}: " in rep.stdout and f"({flag} {there}" in rep.stdout, key
    assert "products    " in rep.stdout and "by recorded checksums)" in rep.stdout
    assert "unchecked" not in rep.stdout and "different" not in rep.stdout
    assert "verdict     REPRODUCED: every science array bit-identical by recorded checksums" in rep.stdout
    view = prov_read.load(out)
    assert view["run"]["reproduce_source"] == str(record) and view["run"]["mpi_size"] == 1
    remapped = view["run"]["reproduce_remapped"]
    assert len(remapped) == 3 + bool(extra) and any(line.startswith("references.crds_path: ") and
                                      line.split(" -> ")[1].startswith(str(there / "kit/crds_cache"))
                                      for line in remapped), remapped

    # with A's run directory present: every science array compared, as before
    cmp = cli(["compare", str(run_a), str(out), "--json", str(out / "compare.json")], tmp)
    assert cmp.returncode == 0, cmp.stdout
    assert "verdict     REPRODUCED: every science array bit-identical\n" in cmp.stdout
    result = json.loads((out / "compare.json").read_text())
    assert result["verdict"] == "REPRODUCED" and result["exit_code"] == 0
    verdicts = {p["path"]: (p["verdict"], p["by"]) for p in result["products"]}
    assert set(verdicts.values()) == {("identical", "arrays")}
    for suffix in (*UNIT_PRODUCTS, "_i2d.fits", "_cat.ecsv"):
        assert any(p.endswith(suffix) for p in verdicts), suffix
    assert not any(result[k] for k in ("software", "references", "parameters", "seeds", "units"))

    # one byte of one science array of B: named from the record alone; shown how with A's files
    edited = there / "R-edited"
    shutil.copytree(out, edited)
    cal = sorted((edited / "exposures").glob("*_cal.fits"))[0]
    _flip_science_byte(cal)
    rel = f"exposures/{cal.name}"
    alone = cli(["compare", str(record), str(edited)], tmp)
    assert alone.returncode == 1, alone.stdout
    assert f"  different: {rel}\n      differs from the record: science digest" in alone.stdout
    assert f"verdict     NOT REPRODUCED: 1 product(s) differ ({rel})" in alone.stdout
    with_a = cli(["compare", str(run_a), str(edited)], tmp)
    assert with_a.returncode == 1, with_a.stdout
    assert f"  different: {rel}\n      SCI: DIFFERENT, 1 of " in with_a.stdout
    assert f"verdict     NOT REPRODUCED: 1 product(s) differ ({rel})" in with_a.stdout
