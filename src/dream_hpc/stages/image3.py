"""Mosaic stage: one jwst Image3 per filter over its `_cal` files -> `_i2d`, `_segm`, `_cat.ecsv`.

Writes a proper level-3 association and a local absolute-astrometry reference catalog (the input
catalog's stars on the exposures; tweakreg never queries Gaia), runs Image3 in process with the
survey's step parameters, checks that tweakreg really fitted (with too few objects it only warns),
moves the products into RUN/mosaic atomically and draws a preview. `dream-hpc mosaic` runs it for
the units a run has finished.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dream_hpc.core.digests import sha256_file
from dream_hpc.core.rundir import atomic_path, atomic_write_text
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.stages import alignment_status
from dream_hpc.stages.contract import StageContext, StageResult, product_path
from dream_hpc.stages.pointing_error import exposure_key

STAGE = "image3"
# Names tweakreg resolves to a network catalog query: never in a dream-hpc run.
NETWORK_REFCATS = ("GAIAREFCAT", "GAIADR3", "GAIADR2", "GAIADR1")
# Messages with which tweakreg (and stcal's alignment code) give up without failing the step.
MAX_FIT_RMSE_PX = 0.5  # a tweakreg fit worse than this (mosaic pixels) matched the wrong sources
_TWEAKREG_GAVE_UP = re.compile(r"not enough|fewer than|skipping|nothing to do|at least two|no sources found|"
                               r"failed|could not", re.IGNORECASE)


class MosaicError(RuntimeError):
    """Image3 could not run for one filter; the message names the filter and the cause."""


# --- names and inputs ------------------------------------------------------------------------
def optical_elements(units: Sequence[WorkUnit]) -> str:
    """jwst's optical-element token, e.g. clear-f150w (filter and pupil, sorted as DMS names them)."""
    unit = units[0]
    return "-".join(sorted({unit.filter.lower(), unit.pupil.lower()}))


def product_name(units: Sequence[WorkUnit]) -> str:
    """Level-3 product name, e.g. jw09999-o001_t001_nircam_clear-f150w."""
    unit = units[0]
    return f"jw{unit.program}-o{unit.observation:03d}_t001_nircam_{optical_elements(units)}"


def association(units: Sequence[WorkUnit], cal_paths: Sequence[Path], asn_dir: Path) -> dict[str, Any]:
    """A jwst image3 association: one product, the `_cal` files as science members."""
    from jwst import __version__ as jwst_version

    name = product_name(units)
    return {
        "asn_type": "image3",
        "asn_rule": "candidate_Asn_Lv3Image",
        "asn_id": f"o{units[0].observation:03d}",
        "asn_pool": "dream-hpc",
        "program": units[0].program,
        "target": "t001",
        "version_id": None,
        "code_version": jwst_version,
        "degraded_status": "No known degraded exposures in association.",
        "constraints": f"dream-hpc survey: all exposures in {units[0].filter}",
        "products": [{
            "name": name,
            # relative to the association file, so a moved run directory still works
            "members": [{"expname": os.path.relpath(p, asn_dir), "exptype": "science"} for p in cal_paths],
        }],
    }


def _check_groups(units: Sequence[WorkUnit]) -> None:
    """Image3 groups exposures by observation/visit/exposure number: each unit must be its own group
    per detector, else tweakreg sees one group and silently skips (the probes met this)."""
    seen: dict[tuple, str] = {}
    for u in units:
        key = (u.program, u.observation, u.visit, u.visit_group, u.sequence, u.activity, u.exposure, u.detector)
        if key in seen:
            raise MosaicError(f"{u.unit_id} and {seen[key]} share an exposure group: Image3 would treat them "
                              "as one exposure (give each dither its own exposure number)")
        seen[key] = u.unit_id


# --- the reference catalog -------------------------------------------------------------------
def write_reference_catalog(cfg: Any, units: Sequence[WorkUnit], path: Path,
                            run_root: Path | None = None) -> dict[str, Any]:
    """The local abs_refcat (stages/reference_catalog.py: the truth with Gaia- or HST-like errors)."""
    from dream_hpc.stages.reference_catalog import write_reference_catalog as write

    return write(cfg, units, path, run_root)


# --- tweakreg check --------------------------------------------------------------------------
class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def recorded(names: Sequence[str]) -> Iterator[_Recorder]:
    rec = _Recorder()
    for name in names:
        logging.getLogger(name).addHandler(rec)
    try:
        yield rec
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(rec)


def tweakreg_outcome(records: Sequence[logging.LogRecord], step_status: str | None,
                     pixel_arcsec: float) -> dict[str, Any]:
    """Did tweakreg fit, and fit well? From the step status in the product and what it logged.

    tweakreg gives up with a warning when it finds too few objects, and with loose matching
    tolerances it can "fit" mismatched sources: a fit whose RMSE exceeds half a mosaic pixel is
    reported as not fitted, since the true residuals of a good match are a small fraction of one.
    """
    messages = [r.getMessage() for r in records]
    gave_up = [m for m in messages if _TWEAKREG_GAVE_UP.search(m)]
    rmse = [float(m.group(1)) for m in (re.search(r"FIT RMSE:\s*([0-9.eE+-]+)", msg) for msg in messages) if m]
    worst = max(rmse) if rmse else float("nan")
    poor = bool(rmse) and worst > MAX_FIT_RMSE_PX * pixel_arcsec
    fitted = step_status == "COMPLETE" and bool(rmse) and not poor
    reason = ""
    if step_status != "COMPLETE" or not rmse:
        reason = "; ".join(gave_up[:3]) or f"step status {step_status or 'unknown'}, no fit logged"
    elif poor:
        reason = (f"fit RMSE {worst:.3g}\" = {worst / pixel_arcsec:.1f} px: sources were mismatched (tighten "
                  "pipeline.image3.tweakreg tolerance/searchrad, or raise snr_threshold)")
    return {"fitted": fitted, "status": step_status or "unknown", "fit_rmse_arcsec": rmse,
            "reason": reason, "warnings": gave_up[:10]}


# --- preview ---------------------------------------------------------------------------------
def preview_png(i2d: Path, cat: Path, png: Path, title: str) -> None:
    """The mosaic with an asinh stretch, a colour bar and the detected sources circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from astropy.io import fits
    from astropy.table import Table
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval

    with fits.open(i2d) as hdul:
        data = np.array(hdul["SCI"].data, dtype=float)
        unit = hdul["SCI"].header.get("BUNIT", "")
    finite = np.isfinite(data) & (data != 0)
    shown = np.where(finite, data, np.nan)
    norm = ImageNormalize(shown[finite] if finite.any() else np.zeros(1),
                          interval=PercentileInterval(99.7), stretch=AsinhStretch(0.05))
    fig, ax = plt.subplots(figsize=(8, 8 * data.shape[0] / max(data.shape[1], 1) + 0.6))
    im = ax.imshow(shown, origin="lower", cmap="gray_r", norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=unit or "surface brightness")
    n = 0
    if cat.is_file():
        table = Table.read(cat, format="ascii.ecsv")
        if len(table):
            n = len(table)
            ax.scatter(table["xcentroid"], table["ycentroid"], s=60, facecolors="none", edgecolors="tab:red",
                       linewidths=0.7, label=f"{n} detected sources")
            ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{title}  ({data.shape[1]}x{data.shape[0]} px, {n} sources)", fontsize=9)
    ax.set_xlabel("x [pixel]")
    ax.set_ylabel("y [pixel]")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- the stage -------------------------------------------------------------------------------
def image3_overrides(cfg: Any, refcat: Path | None) -> dict[str, dict[str, Any]]:
    """The survey's Image3 step parameters, with tweakreg's absolute catalog made local."""
    overrides = copy.deepcopy(cfg.pipeline.image3)
    tweak = overrides.setdefault("tweakreg", {})
    user_refcat = str(tweak.get("abs_refcat", "") or "")
    if user_refcat.upper() in NETWORK_REFCATS:
        raise MosaicError(f"pipeline.image3.tweakreg.abs_refcat: {user_refcat} is a network catalog query; runs "
                          "are offline (leave it unset to use the input catalog's stars, or name a local file)")
    if not user_refcat and refcat is not None:
        tweak["abs_refcat"] = str(refcat)
    return overrides


def run_mosaic(filter: str, units: Sequence[WorkUnit], ctx: StageContext) -> StageResult:  # noqa: A002
    """Image3 over the `_cal` files of `units` in `filter`; products land in RUN/mosaic."""
    from dream_hpc.stages.calibrate import (
        build_pipeline,
        jwst_logging,
        references_used,
        settle_heap,
        step_events,
        validate_overrides,
    )

    run, cfg = ctx.run, ctx.cfg
    units = sorted((u for u in units if u.filter.upper() == filter.upper()), key=lambda u: u.unit_id)
    if not units:
        raise MosaicError(f"{filter}: no finished exposures in this filter (nothing to mosaic)")
    _check_groups(units)
    cal_paths = [product_path(run, u, "image2") for u in units]
    missing = [p.name for p in cal_paths if not p.is_file()]
    if missing:
        raise MosaicError(f"{filter}: {len(missing)} _cal file(s) missing, e.g. {missing[0]} (finish those units "
                          "first, or leave them out)")
    validate_overrides(ctx)
    name = product_name(units)
    stem = f"{filter.lower()}"
    asn_path = run.mosaic / f"{stem}_asn.json"
    atomic_write_text(asn_path, json.dumps(association(units, cal_paths, run.mosaic), indent=1) + "\n")

    refcat: Path | None = run.mosaic / f"{stem}_refcat.ecsv"
    refcat_info = write_reference_catalog(cfg, units, refcat, run.root)
    n_ref = refcat_info["n"]
    if n_ref == 0:
        ctx.log.warning("%s: no reference-catalog sources on the exposures: tweakreg aligns relatively only", filter)
        refcat = None
    overrides = image3_overrides(cfg, refcat)

    times: dict[str, float] = {}
    settle_heap()
    workdir = Path(tempfile.mkdtemp(prefix=f".tmp-image3-{stem}.", dir=run.mosaic))
    t0 = time.perf_counter()
    try:
        with (jwst_logging(), recorded(["jwst.tweakreg", "stcal.tweakreg", "tweakwcs"]) as rec,
              warnings.catch_warnings()):
            # our members live in ../exposures: a relative path, which jwst warns about on every load
            warnings.filterwarnings("ignore", message="Input association file contains path information")
            pipe = build_pipeline("image3", asn_path, overrides, workdir, save_results=True)
            params = pipe.get_pars()
            with step_events(pipe, STAGE, ctx, times):
                pipe.run(str(asn_path))
        produced = {p.name: p for p in workdir.iterdir() if p.is_file()}
        needed = [f"{name}_i2d.fits", f"{name}_segm.fits", f"{name}_cat.ecsv"]
        absent = [n for n in needed if n not in produced]
        if absent:
            raise MosaicError(f"{filter}: Image3 finished without {', '.join(absent)} (see the mosaic log)")
        finals = {}
        for fname, src in sorted(produced.items()):
            final = run.mosaic / fname
            with atomic_path(final) as tmp:
                os.replace(src, tmp)
            finals[fname] = final
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - t0

    from stdatamodels.jwst import datamodels

    i2d = finals[f"{name}_i2d.fits"]
    with datamodels.open(i2d) as model:
        refs, shas = references_used(model)
        status = model.meta.cal_step.tweakreg
        shape = model.data.shape
        pixel_arcsec = math.degrees(math.sqrt(model.meta.photometry.pixelarea_steradians)) * 3600.0
    tweak = tweakreg_outcome(rec.records, status, pixel_arcsec)
    # per exposure group: "fitted" only when every group is aligned, else "partial" naming them
    groups = sorted({exposure_key(u) for u in units})
    absolute = bool(overrides.get("tweakreg", {}).get("abs_refcat")) and not overrides["tweakreg"].get("skip")
    tweak["alignment"] = alignment_status.parse(rec.records, groups, absolute, MAX_FIT_RMSE_PX * pixel_arcsec)
    tweak["fitted"] = bool(tweak["fitted"] and tweak["alignment"]["status"] == "fitted")
    if not tweak["fitted"]:
        why = tweak["reason"] or alignment_status.one_line(tweak["alignment"])
        ctx.log.warning("%s: tweakreg did not fit every group: %s", filter, why)
        ctx.emit("warning", stage=STAGE, filter=filter, message=f"tweakreg did not fit every group: {why}")
    png = run.figures / f"mosaic_{filter.lower()}.png"
    preview_png(i2d, finals[f"{name}_cat.ecsv"], png, f"{name}_i2d")

    result = StageResult(stage=STAGE, refs=refs, ref_sha256=shas, params=params, step_times=times)
    for p in [*cal_paths, asn_path, *([refcat] if refcat else [])]:
        result.inputs[run.rel(p)] = sha256_file(p)
    for p in [*finals.values(), png]:
        result.outputs[run.rel(p)] = sha256_file(p)
    result.extra = {"filter": filter.upper(), "product": name, "asn": run.rel(asn_path), "n_inputs": len(units),
                    "n_refcat_stars": n_ref, "refcat": refcat_info, "tweakreg": tweak, "shape": list(shape), "wall_s": wall,
                    "i2d": run.rel(i2d), "segm": run.rel(finals[f"{name}_segm.fits"]),
                    "cat": run.rel(finals[f"{name}_cat.ecsv"]), "preview": run.rel(png)}
    return result
