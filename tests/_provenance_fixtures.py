"""Helpers for provenance tests: a small run directory with real FITS products and a realistic journal.

Until (and besides) end-to-end runs of the engine, provenance is exercised on run directories
written here: jwst-named products with SCI/ERR/DQ arrays drawn from a seeded generator (so two
runs are pixel-identical while their headers' DATE differ), and a journal written through the
real JournalWriter with the record kinds and fields the engine writes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

import numpy as np

from dream_hpc.config import parse_config
from dream_hpc.core.digests import sha256_file
from dream_hpc.core.journal import JournalWriter
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.workunit import STAGES
from dream_hpc.provenance.digest import science_digest
from dream_hpc.provenance.facts import collect

CONFIG = """\
survey:
  name: prov-test
  program: '09999'
  seed: 42
catalog:
  path: catalog.ecsv
instrument:
  detectors: [NRCB1]
  filter_pairs: [[F150W, F277W]]
  subarray: SUB160
  readout: {readpatt: RAPID, ngroups: 3}
references:
  crds_path: refkit/crds_cache
  mirage_data: refkit/mirage_data
pipeline:
  detector1:
    jump: {rejection_threshold: 5.0}
"""

UNITS = [f"jw09999001001_01101_0000{i}_nrcb1" for i in (1, 2, 3)]
REFS = {"dark": "jwst_nircam_dark_0001.fits", "gain": "jwst_nircam_gain_0001.fits",
        "flat": "jwst_nircam_flat_0001.fits", "photom": "jwst_nircam_photom_0001.fits"}


def make_refkit(base: Path) -> None:
    """A tiny stand-in reference kit (files only; the provenance code never opens them)."""
    for sub, files in (("crds_cache/references/jwst/nircam", REFS.values()), ("mirage_data/nircam/darks", ["d.fits"])):
        d = base / "refkit" / sub
        d.mkdir(parents=True, exist_ok=True)
        for name in files:
            (d / name).write_bytes(name.encode() * 10)
    (base / "catalog.ecsv").write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: ID, datatype: int64}\nID\n1\n")


def write_fits(path: Path, arrays: dict[str, np.ndarray], date: str) -> str:
    from astropy.io import fits

    hdus = [fits.PrimaryHDU()]
    hdus[0].header["DATE"] = date
    hdus[0].header["CAL_VER"] = "3.0.0"
    for name, data in arrays.items():
        hdus.append(fits.ImageHDU(data, name=name))
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return sha256_file(path)


def _arrays(kind: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "uncal":
        return {"SCI": rng.integers(1000, 3000, size=(1, 3, 16, 16)).astype(np.uint16)}
    sci = rng.normal(1.0, 0.1, size=(16, 16)).astype(np.float32)
    out = {"SCI": sci, "ERR": np.abs(sci) * np.float32(0.1), "DQ": np.zeros((16, 16), np.uint32)}
    if kind == "i2d":
        out = {"SCI": sci, "ERR": out["ERR"], "WHT": np.ones((16, 16), np.float32),
               "CON": np.ones((1, 16, 16), np.int32)}
    return out


def _writers(run: RunDir, ranks: int) -> list[JournalWriter]:
    return [JournalWriter(run.journal, rank) for rank in range(ranks)]


def _start(run: RunDir, writer: JournalWriter, ranks: int) -> None:
    cfg = parse_config(run.config.read_text(), run.root.parent / "config.yaml")
    writer.write("run_start", **collect(cfg, run, mpi_size=ranks))


def make_run(root: Path, *, ranks: int = 1, fail_unit: str | None = None,
             interrupt: tuple[str, str] | None = None, date: str = "2025-01-01T00:00:00",
             jump_threshold: float = 5.0, pixel_offset: float = 0.0) -> RunDir:
    """A finished run in `root` with products and journal.

    interrupt=(unit_id, stage): every rank is "SIGKILLed" in the jump step of that unit's stage
    (the journal just stops). pixel_offset is added to one pixel of the first unit's cal SCI.
    """
    base = root.parent
    if not (base / "refkit").is_dir():
        make_refkit(base)
    text = CONFIG.replace("rejection_threshold: 5.0", f"rejection_threshold: {jump_threshold}")
    (base / "config.yaml").write_text(text)
    run = RunDir.create(root)
    run.config.write_text(text)
    writers = _writers(run, ranks)
    _start(run, writers[0], ranks)
    done = failed = 0
    for i, uid in enumerate(UNITS):
        ok = _unit(run, writers[i % ranks], uid, date, fail=(uid == fail_unit), jump_threshold=jump_threshold,
                   stop_in=interrupt[1] if interrupt and interrupt[0] == uid else None,
                   pixel_offset=pixel_offset if i == 0 else 0.0)
        if ok is None:
            for w in writers:
                w.close()
            return run
        done, failed = done + ok, failed + (not ok)
    _mosaic(run, writers[0], date)
    writers[0].write("run_end", status="ok" if not failed else "failed", n_done=done, n_failed=failed)
    for w in writers:
        w.close()
    return run


def resume_run(run: RunDir, units: list[str], ranks: int = 2, date: str = "2025-01-01T00:00:00") -> None:
    """A second attempt: redo `units` from their first stage without a verified product, then the mosaic."""
    writers = _writers(run, ranks)
    _start(run, writers[0], ranks)
    for i, uid in enumerate(units):
        _unit(run, writers[i % ranks], uid, date)
    _mosaic(run, writers[0], date)
    writers[0].write("run_end", status="ok", n_done=len(units), n_failed=0)
    for w in writers:
        w.close()


STEPS = {"simulate": ["seed", "dark_prep", "obs_generator"],
         "detector1": ["dq_init", "saturation", "jump", "ramp_fit"], "image2": ["flat_field", "photom"]}
SUFFIX = {"simulate": "uncal", "detector1": "rate", "image2": "cal"}


def _unit(run: RunDir, w: JournalWriter, uid: str, date: str, fail: bool = False, jump_threshold: float = 5.0,
          stop_in: str | None = None, pixel_offset: float = 0.0) -> bool | None:
    """Journal one unit the way the engine does; True done, False failed, None killed mid-stage."""
    i = UNITS.index(uid)
    seeds = {"poisson": 1000 + i, "cosmic_ray": 2000 + i, "numpy": 3000 + i}
    todo = [s for s in STAGES if not (run.root / f"exposures/{uid}_{SUFFIX[s]}.fits").is_file()]
    w.write("unit_start", uid, stage=todo[0], stages=todo, limit_s=600.0)
    previous: dict[str, str] = {f"inputs/{uid}/{uid}.yaml": "ab" * 32}
    if todo[0] != "simulate":
        rel = f"exposures/{uid}_{SUFFIX[STAGES[STAGES.index(todo[0]) - 1]]}.fits"
        previous = {rel: sha256_file(run.root / rel)}
    for stage in todo:
        suffix = SUFFIX[stage]
        for step in STEPS[stage]:
            w.write("step", uid, stage=stage, step=step, status="start")
            if step == "jump" and stop_in == stage:
                return None
            if fail and step == "jump":
                w.write("step", uid, stage=stage, step=step, status="failed")
                w.write("unit_failed", uid, stage=stage, step=step, error="ValueError: too many values to unpack")
                return False
            w.write("step", uid, stage=stage, step=step, status="done")
        rel = f"exposures/{uid}_{suffix}.fits"
        arrays = _arrays(suffix, 10 * i + len(suffix))
        if pixel_offset and suffix == "cal":
            arrays["SCI"][3, 4] += np.float32(pixel_offset)
        sha = write_fits(run.root / rel, arrays, date)
        refs = {} if stage == "simulate" else {k: f"crds://{v}" for k, v in REFS.items()}
        params = ({"jump": {"rejection_threshold": jump_threshold, "maximum_cores": "none"},
                   "ramp_fit": {"algorithm": "OLS_C"}} if stage == "detector1" else
                  {"flat_field": {"skip": False}} if stage == "image2" else {"bkgdrate": 0.2, "cosmic_rays": True})
        w.write("stage_done", uid, stage=stage, inputs=previous, outputs={rel: sha},
                science_sha256={rel: science_digest(run.root / rel)}, refs=refs,
                ref_sha256={v: hashlib.sha256(v.encode()).hexdigest() for v in refs.values()}, params=params,
                seeds=seeds if stage == "simulate" else {}, step_times={s: 0.1 for s in STEPS[stage]},
                extra={}, wall_s=1.5, cpu_s=1.4, peak_rss_mb=300.0 + i, start=now())
        previous = {rel: sha}
    w.write("unit_done", uid, outputs=previous, wall_s=4.5, cpu_s=4.2, peak_rss_mb=303.0)
    return True


def _mosaic(run: RunDir, w: JournalWriter, date: str) -> None:
    cals = {f"exposures/{u}_cal.fits": sha256_file(run.root / f"exposures/{u}_cal.fits")
            for u in UNITS if (run.root / f"exposures/{u}_cal.fits").is_file()}
    rel = "mosaic/jw09999-o001_t001_nircam_clear-f150w_i2d.fits"
    sha = write_fits(run.root / rel, _arrays("i2d", 99), date)
    asn = {"asn_type": "image3", "products": [{"name": "jw09999-o001_t001_nircam_clear-f150w",
                                               "members": [{"expname": Path(c).name, "exptype": "science"}
                                                           for c in cals]}]}
    (run.mosaic / "f150w_asn.json").write_text(json.dumps(asn))
    w.write("mosaic_start", None, filter="F150W", units=UNITS, limit_s=600.0)
    w.write("step", None, stage="image3", filter="F150W", step="tweakreg", status="start")
    w.write("step", None, stage="image3", filter="F150W", step="tweakreg", status="done")
    w.write("mosaic_done", None, filter="F150W", asn=asn, inputs=cals, outputs={rel: sha},
            science_sha256={rel: science_digest(run.root / rel)},
            params={"tweakreg": {"minobj": 5, "abs_refcat": ""}}, refs={"apcorr": "crds://jwst_nircam_apcorr_0001.fits"},
            ref_sha256={"crds://jwst_nircam_apcorr_0001.fits": "cd" * 32}, start=now(), wall_s=12.0, cpu_s=11.0, peak_rss_mb=900.0)


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def consolidated_run(tmp_path: Path, name: str, **kw) -> Path:
    """`make_run` under tmp_path/name, its provenance.h5 written."""
    from dream_hpc.provenance.write import consolidate

    run = make_run(tmp_path / name, **kw)
    consolidate(run)
    return run
