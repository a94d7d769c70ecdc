"""The science chain end to end on a tiny survey: real Mirage, real jwst, nothing mocked.

Two F150W units (one tile, two dithers, NRCB1) go through simulate -> Detector1 -> Image2 -> Image3
in `dream-hpc survey`; the tests check jwst names and product types, the parameters recorded as
applied, the step events, and that a broken exposure is reported and isolated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _chain_fixtures import SurveyRun, cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def journal(run: Path) -> list[dict]:
    from dream_hpc.core.journal import ordered_records, read_journal

    return ordered_records(read_journal(run / "journal"))


def plan_units(run: Path) -> list[dict]:
    return json.loads((run / "plan.json").read_text())["units"]


def test_survey_succeeds_with_progress(chain_run: SurveyRun) -> None:
    assert chain_run.proc.returncode == 0, chain_run.proc.stdout + chain_run.proc.stderr
    out = chain_run.proc.stdout
    assert "units 2/2 done, 0 failed" in out  # the engine's progress line
    assert "2/2 units done, 0 failed" in out  # the summary
    assert "science: completeness" in out
    assert chain_run.proc.stderr.count("\n") < 20, chain_run.proc.stderr  # Mirage/jwst chatter goes to logs


def test_products_have_jwst_names_and_types(chain_run: SurveyRun) -> None:
    from astropy.io import fits

    run = chain_run.run
    units = plan_units(run)
    assert len(units) == 2
    for u in units:
        # Mirage writes its raw ramps as a RampModel (MAST's are Level1bModel); jwst opens both as uncal
        for suffix, model in (("uncal", "RampModel"), ("rate", "ImageModel"), ("cal", "ImageModel")):
            path = run / "exposures" / f"{u['unit_id']}_{suffix}.fits"
            assert path.is_file(), path
            header = fits.getheader(path)
            assert header["FILENAME"] == path.name
            assert header["DATAMODL"] == model, (path.name, header["DATAMODL"])
            assert header["FILTER"] == "F150W" and header["DETECTOR"] == "NRCB1"
        assert fits.getheader(run / "exposures" / f"{u['unit_id']}_cal.fits")["S_PHOTOM"] == "COMPLETE"
    product = "jw09999-o001_t001_nircam_clear-f150w"
    i2d = fits.getheader(run / "mosaic" / f"{product}_i2d.fits")
    assert i2d["DATAMODL"] == "ImageModel" and i2d["FILENAME"] == f"{product}_i2d.fits"
    assert fits.getheader(run / "mosaic" / f"{product}_segm.fits")["DATAMODL"] == "SegmentationMapModel"
    from astropy.table import Table

    cat = Table.read(run / "mosaic" / f"{product}_cat.ecsv")
    assert {"sky_centroid", "aper_total_abmag", "isophotal_abmag"} <= set(cat.colnames) and len(cat) > 5
    asn = json.loads((run / "mosaic" / "f150w_asn.json").read_text())
    assert asn["asn_type"] == "image3" and asn["products"][0]["name"] == product
    assert sorted(Path(m["expname"]).name for m in asn["products"][0]["members"]) == sorted(
        f"{u['unit_id']}_cal.fits" for u in units)
    assert not list(run.rglob(".tmp-*")), "temporary files left behind"
    assert (run / "figures" / "mosaic_f150w.png").stat().st_size > 10_000


def test_final_parameters_recorded(chain_run: SurveyRun) -> None:
    records = journal(chain_run.run)
    done = {(r["unit"], r["data"]["stage"]): r["data"] for r in records if r["kind"] == "stage_done"}
    units = plan_units(chain_run.run)
    for u in units:
        sim = done[(u["unit_id"], "simulate")]
        reffiles = sim["params"]["Reffiles"]
        # every reference Mirage reads is a full path from the kit (none left to Mirage's CRDS lookup)
        for key in ("badpixmask", "astrometric", "gain", "linearity", "saturation", "superbias", "pixelflat"):
            assert Path(reffiles[key]).is_absolute() and Path(reffiles[key]).is_file(), key
        assert isinstance(sim["params"]["simSignals"]["bkgdrate"], float)
        assert sim["params"]["Output"]["program_number"] == "09999"
        assert sim["params"]["simSignals"]["poissonseed"] == u["seeds"]["poisson"]
        assert sim["params"]["cosmicRay"]["seed"] == u["seeds"]["cosmic_ray"]
        det1 = done[(u["unit_id"], "detector1")]
        assert det1["params"]["steps"]["jump"]["rejection_threshold"] > 0  # the whole tree, as applied
        assert det1["params"]["steps"]["ramp_fit"]["maximum_cores"] in ("none", "1")
        assert det1["refs"]["crds_context"] == "jwst_0001.pmap"
        # Mirage and Detector1 used the very same reference files
        for reftype in ("superbias", "linearity", "saturation", "mask", "gain"):
            assert sim["refs"][reftype] == det1["refs"][reftype], reftype
        image2 = done[(u["unit_id"], "image2")]
        assert sim["refs"]["distortion"] == image2["refs"]["distortion"]
        # Mirage applies the kit's QE flat; jwst's flat also carries the pixel area (refkit design)
        assert sim["refs"]["mirage_pixelflat"].startswith("mirage_data://") and "flat" in image2["refs"]
        assert set(det1["step_times"]) >= {"dq_init", "saturation", "jump", "ramp_fit"}
    mosaic = next(r["data"] for r in records if r["kind"] == "mosaic_done")
    tweak = mosaic["params"]["steps"]["tweakreg"]
    assert tweak["minobj"] == 5  # from the config
    assert tweak["abs_refcat"].endswith("f150w_refcat.ecsv") and Path(tweak["abs_refcat"]).is_file()


def test_step_events_locate_every_step(chain_run: SurveyRun) -> None:
    steps = [(r["unit"], r["data"]["stage"], r["data"]["step"], r["data"]["status"])
             for r in journal(chain_run.run) if r["kind"] == "step"]
    unit = plan_units(chain_run.run)[0]["unit_id"]
    mine = [(stage, step, status) for u, stage, step, status in steps if u == unit]
    for phase in ("seed", "dark_prep", "obs_generator"):
        assert ("simulate", phase, "start") in mine and ("simulate", phase, "done") in mine
    for step in ("dq_init", "refpix", "jump", "ramp_fit"):
        assert mine.index(("detector1", step, "start")) < mine.index(("detector1", step, "done"))
    for step in ("assign_wcs", "flat_field", "photom"):
        assert ("image2", step, "done") in mine
    mosaic_steps = {(stage, step, status) for u, stage, step, status in steps if u is None}
    assert ("image3", "tweakreg", "done") in mosaic_steps and ("image3", "source_catalog", "done") in mosaic_steps


def test_tweakreg_fitted_and_summary(chain_run: SurveyRun) -> None:
    summary = json.loads((chain_run.run / "summary.json").read_text())
    m = summary["mosaics"]["F150W"]
    assert m["tweakreg"]["fitted"], m["tweakreg"]
    assert m["n_refcat_stars"] > 0
    assert summary["n_done"] == 2 and summary["n_failed"] == 0
    assert set(summary["stage_times"]) == {"simulate", "detector1", "image2"}
    assert "science" in m and m["science"]["n_output_sources"] > 0


def test_rerun_resumes_by_checksum_isolates_a_failure_and_reproduces_pixels(chain_run: SurveyRun,
                                                                            tmp_path: Path) -> None:
    """Rerun a copy of the run where unit 0's _rate is truncated (its _cal gone) and unit 1 was never
    simulated (nor the cached dark_prep product), with unit 0's image2 made to raise (the engine's
    test fault hook): the truncated product is caught by its checksum and only detector1 onwards is
    redone, bit for bit; unit 1 is remade bit for bit; unit 0's failure is reported with its stage;
    the existing mosaic is not replaced by a partial one."""
    import numpy as np
    from astropy.io import fits

    from dream_hpc.core.digests import sha256_file

    run = tmp_path / "run"
    shutil.copytree(chain_run.run, run)
    units = plan_units(run)
    bad, redo = units[0]["unit_id"], units[1]["unit_id"]
    rate = run / "exposures" / f"{bad}_rate.fits"
    rate.write_bytes(rate.read_bytes()[:20000])
    (run / "exposures" / f"{bad}_cal.fits").unlink()
    for p in (run / "exposures").glob(f"{redo}_*.fits"):
        p.unlink()
    shutil.rmtree(run / "inputs" / "mirage_darks")
    i2d = next((run / "mosaic").glob("*_i2d.fits"))
    before = sha256_file(i2d)

    proc = cli(["survey", str(chain_run.config), "--out", str(run)], env={"DREAM_HPC_TEST_FAULT": f"{bad}:image2:raise"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["failures"]) == [bad]
    failure = summary["failures"][bad]
    assert failure["stage"] == "image2" and "injected test fault" in failure["error"]
    assert f"FAILED {bad}: image2" in proc.stdout
    assert summary["units"][bad]["skipped_existing"] == ["simulate"]  # its uncal still matched its checksum
    assert summary["n_done"] == 1 and summary["units"][redo]["skipped_existing"] == []
    assert np.array_equal(fits.getdata(rate, "SCI"), fits.getdata(chain_run.run / "exposures" / rate.name, "SCI"),
                          equal_nan=True)
    for suffix in ("uncal", "rate", "cal"):
        new = fits.getdata(run / "exposures" / f"{redo}_{suffix}.fits", "SCI")
        old = fits.getdata(chain_run.run / "exposures" / f"{redo}_{suffix}.fits", "SCI")
        assert np.array_equal(new, old, equal_nan=True), f"{redo}_{suffix} differs when remade"
    assert "allow_partial_mosaic" in summary["mosaics"]["F150W"]["error"]
    assert sha256_file(i2d) == before


def test_mosaic_command_remakes_the_mosaic(chain_run: SurveyRun, tmp_path: Path) -> None:
    """`dream-hpc mosaic` finds the finished units from the journal and redoes Image3 + science check."""
    run = tmp_path / "run"
    shutil.copytree(chain_run.run, run)
    for p in (run / "mosaic").iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()  # the tiled mosaic's subdirectories too
    proc = cli(["mosaic", str(chain_run.config), "--out", str(run), "--filter", "F150W"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "F150W: mosaic/jw09999-o001_t001_nircam_clear-f150w_i2d.fits (2 exposures" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mosaics"]["F150W"]["science"]["n_output_sources"] > 0
    assert summary["n_done"] == 2  # the rest of the survey's summary is kept
    proc = cli(["mosaic", str(chain_run.config), "--out", str(tmp_path / "elsewhere")])
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_truncated_input_is_one_clear_error(tmp_path: Path) -> None:
    """Calibration names a damaged input and the fix before starting jwst."""
    from dream_hpc.config import SurveyConfig
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.core.workunit import WorkUnit
    from dream_hpc.stages.calibrate import CalibrationError, detector1_unit
    from dream_hpc.stages.contract import StageContext

    run = RunDir.create(tmp_path / "run")
    unit = WorkUnit(program="09999", observation=1, visit=1, visit_group=1, sequence=1, activity=1, exposure=1,
                    detector="NRCB1", filter="F150W", pupil="CLEAR", subarray="SUB400P", readpatt="BRIGHT2",
                    ngroups=4, nints=1, ra=150.1, dec=2.2, pa_v3=0.0, date_obs="2024-01-01",
                    time_obs="00:00:00.000")
    (run.exposures / unit.filename("uncal")).write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    with pytest.raises(CalibrationError, match=r"_uncal.fits is not a readable FITS product .*rerun the simulate"):
        detector1_unit(unit, StageContext(cfg=SurveyConfig(), run=run))


def test_mosaic_command_computes_no_unit_and_names_the_unfinished(chain_run: SurveyRun, tmp_path: Path) -> None:
    """`dream-hpc mosaic` verifies units, never computes them: with one unit's _cal gone it makes no
    partial mosaic (the existing one stays), names the unit, and starts no unit."""
    from dream_hpc.core.digests import sha256_file

    run = tmp_path / "run"
    shutil.copytree(chain_run.run, run)
    gone = plan_units(run)[0]["unit_id"]
    (run / "exposures" / f"{gone}_cal.fits").unlink()
    i2d = next((run / "mosaic").glob("*_i2d.fits"))
    before, n_starts = sha256_file(i2d), sum(r["kind"] == "unit_start" for r in journal(run))
    proc = cli(["mosaic", str(chain_run.config), "--out", str(run)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert gone in proc.stderr and "allow_partial_mosaic" in proc.stderr
    assert "1 not finished" in proc.stderr
    assert sum(r["kind"] == "unit_start" for r in journal(run)) == n_starts
    assert not (run / "exposures" / f"{gone}_cal.fits").exists()
    assert sha256_file(i2d) == before
    summary = json.loads((run / "summary.json").read_text())
    assert "allow_partial_mosaic" in summary["mosaics"]["F150W"]["error"]
