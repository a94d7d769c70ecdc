"""Survey-scale Image3 in four kinds of bounded tasks on one pixel grid (plan/grid.py):

1. astrometry, per visit: jwst tweakreg over the visit's `_cal` files (relative within the visit, then
   absolute to the input catalog's stars on them: a local file, never a network query); the fitted
   WCS is frozen as one `<exposure>_tweakreg.fits` per exposure (jwst reads it back like any
   datamodel), with the fitted shift/rotation, RMS and number of matched stars recorded per exposure.
   A fit that failed or matched fewer than `mosaic.min_matches` stars fails the task, naming the
   exposure: a bad WCS is never used.
2. outliers, per visit padded with the overlapping exposures of other visits: jwst skymatch +
   outlier_detection over those frozen WCSs; only the visit's own exposures are written, as
   `<exposure>_crf.fits` (DQ OUTLIER flags, meta.background.level). Each exposure's mask and sky
   level are decided once, in its own visit's task, and every tile reads the same `_crf`.
   Why per visit and not per tile: a tile-wise median would give an exposure in a tile overlap two
   different masks (and a full-tile layer per input, what campfire dropped); a visit is bounded by
   the observing plan, and the padding gives its edges the other visits' depth for the median.
3. tile, per tile: Image3 with tweakreg, skymatch and outlier_detection skipped, resample onto the
   survey grid (crval, rotation, pixel_scale shared; crpix, output_shape per tile), source_catalog.
   Products: `<product>_<tile id>_i2d.fits`, `_segm.fits`, `_cat.ecsv`.
4. merge, per filter (stages/tile_merge.py): one source catalog, a tile index, a preview.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.rundir import RunDir, atomic_path, atomic_write_text
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan.grid import Grid, Tile
from dream_hpc.stages.contract import StageContext, StageResult, product_path
from dream_hpc.stages.image3 import (
    MosaicError,
    association,
    image3_overrides,
    product_name,
    write_reference_catalog,
)
from dream_hpc.stages.tile_products import missing, result, save_model

STAGE = "image3"


# --- paths -----------------------------------------------------------------------------------
def astrometry_dir(run: RunDir) -> Path:
    return run.mosaic / "astrometry"


def outliers_dir(run: RunDir) -> Path:
    return run.mosaic / "outliers"


def tiles_dir(run: RunDir) -> Path:
    return run.mosaic / "tiles"


def tweakreg_path(run: RunDir, unit: WorkUnit) -> Path:
    return astrometry_dir(run) / unit.filename("tweakreg")


def crf_path(run: RunDir, unit: WorkUnit) -> Path:
    return outliers_dir(run) / unit.filename("crf")


def tile_product(units: Sequence[WorkUnit], tile_id: str) -> str:
    """jwst's level-3 name plus the tile id, e.g. jw09999-o001_t001_nircam_clear-f150w-r0c1."""
    return f"{product_name(units)}-{tile_id}"


def _asn(units: Sequence[WorkUnit], paths: Sequence[Path], asn_path: Path, name: str) -> Path:
    asn = association(units, paths, asn_path.parent)
    asn["products"][0]["name"] = name
    atomic_write_text(asn_path, json.dumps(asn, indent=1) + "\n")
    return asn_path


@contextlib.contextmanager
def _scratch(run: RunDir, stem: str) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix=f".tmp-{stem}.", dir=run.mosaic))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _jwst(quiet_paths: bool = True) -> Iterator[None]:
    from dream_hpc.stages.calibrate import jwst_logging

    with jwst_logging(), warnings.catch_warnings():
        if quiet_paths:  # members live in other directories: jwst warns on every load
            warnings.filterwarnings("ignore", message="Input association file contains path information")
        yield


@contextlib.contextmanager
def _image3(ctx: StageContext, stem: str, asn: Path, overrides: dict[str, dict[str, Any]],
            save: bool = False) -> Iterator[tuple[Any, Path]]:
    """(Image3 pipeline, its scratch directory) with jwst's logging captured; the scratch is removed after."""
    from dream_hpc.stages.calibrate import build_pipeline, settle_heap, validate_overrides

    with _scratch(ctx.run, stem) as workdir, _jwst():
        validate_overrides(ctx)
        settle_heap()
        yield build_pipeline("image3", asn, overrides, workdir, save_results=save), workdir


# --- 1. astrometry ---------------------------------------------------------------------------
@contextlib.contextmanager
def _captured_fits() -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
    """tweakwcs' fit_info per image name, from stcal's relative and absolute alignment (tweakreg
    keeps its correctors to itself): {"relative"|"absolute": {image name: fit_info}}."""
    from jwst.tweakreg import tweakreg_step

    twk = tweakreg_step.twk
    seen: dict[str, dict[str, dict[str, Any]]] = {"relative": {}, "absolute": {}}
    originals = twk.relative_align, twk.absolute_align

    def wrap(func: Any, kind: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            correctors = func(*args, **kwargs)
            for c in correctors:
                seen[kind][str(c.meta.get("name"))] = dict(c.meta.get("fit_info") or {})
            return correctors
        return call

    twk.relative_align, twk.absolute_align = wrap(originals[0], "relative"), wrap(originals[1], "absolute")
    try:
        yield seen
    finally:
        twk.relative_align, twk.absolute_align = originals


def _fit_summary(info: dict[str, Any]) -> dict[str, Any]:
    if not info:
        return {"status": "not fitted"}
    n = info.get("nmatches")
    if n is None and info.get("fitmask") is not None:
        n = int(np.count_nonzero(info["fitmask"]))
    shift = info.get("shift")
    return {"status": str(info.get("status", "?")), "n_matches": None if n is None else int(n),
            "rmse_arcsec": None if info.get("rmse") is None else float(info["rmse"]),
            "mae_arcsec": None if info.get("mae") is None else float(info["mae"]),
            "shift_tangent_arcsec": None if shift is None else [float(v) for v in shift],
            "rotation_deg": None if info.get("<rot>") is None else float(info["<rot>"]),
            "fitgeom": info.get("fitgeom")}


def _wcs_change(before: Any, after: Any, shape: tuple[int, int]) -> dict[str, float]:
    """How the frozen WCS moved the detector: shift of its centre (arcsec, east/north) and rotation (deg)."""
    from dream_hpc.plan.footprint import tangent_offsets

    ny, nx = shape
    xs, ys = np.array([(nx - 1) / 2, (nx - 1) / 2]), np.array([(ny - 1) / 2, ny - 1.0])
    ra0, dec0 = before(xs, ys)
    ra1, dec1 = after(xs, ys)
    e, n = tangent_offsets(ra1, dec1, float(ra0[0]), float(dec0[0]))
    e0, n0 = tangent_offsets(ra0, dec0, float(ra0[0]), float(dec0[0]))
    rot = math.degrees(math.atan2(e[1] - e[0], n[1] - n[0]) - math.atan2(e0[1] - e0[0], n0[1] - n0[0]))
    return {"shift_east_arcsec": float(e[0]), "shift_north_arcsec": float(n[0]),
            "rotation_deg": float((rot + 180.0) % 360.0 - 180.0)}


def run_astrometry(spec: dict[str, Any], units: Sequence[WorkUnit], ctx: StageContext) -> StageResult:
    """Align one visit's exposures to each other and to the input catalog's stars; freeze their WCSs."""
    from stdatamodels.jwst import datamodels

    run, cfg = ctx.run, ctx.cfg
    filt, group = spec["filter"], spec["group"]
    units = sorted(units, key=lambda u: u.unit_id)
    cal = [product_path(run, u, "image2") for u in units]
    missing(cal, "_cal file(s)")
    out = astrometry_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{filt.lower()}_{group}"
    refcat = out / f"{group}_{filt.lower()}_refcat.ecsv"
    n_ref = write_reference_catalog(cfg, units, refcat, run.root)["n"]
    min_matches = cfg.mosaic.min_matches
    if n_ref < min_matches:
        raise MosaicError(f"{filt} {group}: {n_ref} input-catalog stars on its exposures, fewer than "
                          f"mosaic.min_matches={min_matches}: no absolute fit possible (lower min_matches, or "
                          "use a denser reference catalog)")
    asn = _asn(units, cal, out / f"{stem}_asn.json", f"{product_name(units)}-{group}")
    overrides = image3_overrides(cfg, refcat)
    times: dict[str, float] = {}
    frozen: dict[str, dict[str, Any]] = {}
    from dream_hpc.stages.calibrate import step_events

    with _image3(ctx, f"astrometry-{stem}", asn, overrides) as (pipe, _):
        params = pipe.get_pars()
        with _captured_fits() as fits, step_events(pipe, STAGE, ctx, times):
            library = pipe.tweakreg.run(str(asn))
        with library:
            for i in range(len(library)):
                model = library.borrow(i)
                uid = Path(model.meta.filename).name.removesuffix("_cal.fits")
                unit = next(u for u in units if u.unit_id == uid)
                with datamodels.open(str(product_path(run, unit, "image2"))) as before:
                    change = _wcs_change(before.meta.wcs, model.meta.wcs, model.data.shape)
                name = Path(model.meta.filename).stem.strip("_- ")
                frozen[uid] = {"status": str(model.meta.cal_step.tweakreg), "wcs_name": model.meta.wcs.name,
                               **change, "relative": _fit_summary(fits["relative"].get(name, {})),
                               "absolute": _fit_summary(fits["absolute"].get(name, {}))}
                model.meta.filename = tweakreg_path(run, unit).name
                if frozen[uid]["status"] == "COMPLETE":
                    save_model(model, tweakreg_path(run, unit))
                library.shelve(model, i, modify=False)
    bad = {uid: f for uid, f in frozen.items() if f["status"] != "COMPLETE"
           or "SUCCESS" not in f["absolute"]["status"] or (f["absolute"]["n_matches"] or 0) < min_matches}
    if bad:
        uid, f = next(iter(sorted(bad.items())))
        a = f["absolute"]
        for u in units:  # never leave a bad frozen WCS where a later task could pick it up
            if u.unit_id in bad:
                tweakreg_path(run, u).unlink(missing_ok=True)
        raise MosaicError(f"{filt} {group}: frozen WCS not usable for {len(bad)} exposure(s), e.g. {uid}: tweakreg "
                          f"{f['status']}, absolute fit {a['status']} with {a.get('n_matches')} matched stars "
                          f"(need >= mosaic.min_matches={min_matches}); check pipeline.image3.tweakreg "
                          "abs_searchrad/abs_tolerance and the stars on the exposure")
    products = [tweakreg_path(run, u) for u in units]
    return result(run, [*cal, refcat, asn], products, params, times,
                   {"phase": "astrometry", "filter": filt, "group": group, "n_inputs": len(units),
                    "n_refcat_stars": n_ref, "frozen_wcs": frozen})


# --- 2. outliers and sky ---------------------------------------------------------------------
def run_outliers(spec: dict[str, Any], units: Sequence[WorkUnit], ctx: StageContext) -> StageResult:
    """skymatch + outlier_detection over a visit padded with its overlapping neighbours; writes the
    visit's own `_crf` files only."""
    from stdatamodels.jwst.datamodels import dqflags

    run, cfg = ctx.run, ctx.cfg
    filt, group = spec["filter"], spec["group"]
    own = set(spec["own"])
    units = sorted(units, key=lambda u: u.unit_id)
    frozen = [tweakreg_path(run, u) for u in units]
    missing(frozen, "frozen WCS file(s) (_tweakreg)")
    out = outliers_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{filt.lower()}_{group}"
    asn = _asn(units, frozen, out / f"{stem}_asn.json", f"{product_name(units)}-{group}")
    overrides = image3_overrides(cfg, None)
    times: dict[str, float] = {}
    facts: dict[str, dict[str, Any]] = {}
    from dream_hpc.stages.calibrate import step_events

    with _image3(ctx, f"outliers-{stem}", asn, overrides) as (pipe, workdir):
        pipe.outlier_detection.mode = "imaging"
        params = pipe.get_pars()
        with step_events(pipe, STAGE, ctx, times):
            library = pipe.skymatch.run(str(asn))
            library = pipe.outlier_detection.run(library)
        with library:
            for i in range(len(library)):
                model = library.borrow(i)
                uid = Path(model.meta.filename).name.removesuffix("_tweakreg.fits")
                if uid in own:
                    unit = next(u for u in units if u.unit_id == uid)
                    bg = model.meta.background
                    facts[uid] = {"sky_level": None if bg.level is None else float(bg.level),
                                  "sky_subtracted": bool(bg.subtracted),
                                  "outlier_pixels": int(np.count_nonzero(model.dq & dqflags.pixel["OUTLIER"]))}
                    model.meta.filename = crf_path(run, unit).name
                    save_model(model, crf_path(run, unit))
                library.shelve(model, i, modify=False)
    products = [crf_path(run, u) for u in units if u.unit_id in own]
    if len(products) != len(own):
        raise MosaicError(f"{filt} {group}: outlier detection returned {len(facts)} of its {len(own)} exposures")
    return result(run, [*frozen, asn], products, params, times,
                   {"phase": "outliers", "filter": filt, "group": group, "n_inputs": len(units),
                    "n_own": len(own), "padding": sorted(u.unit_id for u in units if u.unit_id not in own),
                    "exposures": facts})


# --- 3. one tile -----------------------------------------------------------------------------
def tile_overrides(cfg: Any, grid: Grid, tile: Tile) -> dict[str, dict[str, Any]]:
    """Image3 with everything per exposure done before: only resample (on the grid) and source_catalog."""
    overrides = image3_overrides(cfg, None)
    for step in ("tweakreg", "skymatch", "outlier_detection"):
        overrides.setdefault(step, {})["skip"] = True
    overrides.setdefault("resample", {}).update(grid.resample_pars(tile))
    return overrides


def run_tile(spec: dict[str, Any], units: Sequence[WorkUnit], ctx: StageContext) -> StageResult:
    """Resample one tile's `_crf` files onto the survey grid, then source_catalog."""
    from stdatamodels.jwst import datamodels

    from dream_hpc.stages.calibrate import references_used, step_events

    run, cfg = ctx.run, ctx.cfg
    grid = Grid.from_dict(spec["grid"])
    tile = next(t for t in grid.tiles if t.tile_id == spec["tile"])
    units = sorted(units, key=lambda u: u.unit_id)
    crf = [crf_path(run, u) for u in units]
    missing(crf, "_crf file(s)")
    out = tiles_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    name = tile_product(units, tile.tile_id)
    asn = _asn(units, crf, out / f"{name}_asn.json", name)
    times: dict[str, float] = {}
    with _image3(ctx, f"tile-{name}", asn, tile_overrides(cfg, grid, tile), save=True) as (pipe, workdir):
        params = pipe.get_pars()
        with step_events(pipe, STAGE, ctx, times):
            pipe.run(str(asn))
        finals = []
        for suffix in ("i2d.fits", "segm.fits", "cat.ecsv"):
            src = workdir / f"{name}_{suffix}"
            if not src.is_file():
                raise MosaicError(f"tile {tile.tile_id}: Image3 finished without {src.name} (see the mosaic log)")
            final = out / src.name
            with atomic_path(final) as tmp:
                os.replace(src, tmp)
            finals.append(final)
    with datamodels.open(str(finals[0])) as model:
        refs = references_used(model)
        shape = model.data.shape
    if tuple(shape[::-1]) != tile.output_shape:
        raise MosaicError(f"tile {tile.tile_id}: resample made {shape[::-1]} pixels, the grid says {tile.output_shape}")
    return result(run, [*crf, asn], finals, params, times,
                   {"phase": "tile", "filter": spec["filter"], "tile": tile.tile_id, "product": name,
                    "n_inputs": len(units), "inputs": [u.unit_id for u in units], "shape": list(shape),
                    "i2d": run.rel(finals[0]), "segm": run.rel(finals[1]), "cat": run.rel(finals[2])}, refs)


def run_phase(spec: dict[str, Any], units: Sequence[WorkUnit], ctx: StageContext) -> StageResult:
    """One task of a tiled mosaic, by its phase (the merge lives in stages/tile_merge.py)."""
    if spec["phase"] == "merge":
        from dream_hpc.stages.tile_merge import run_merge

        return run_merge(spec, units, ctx)
    return {"astrometry": run_astrometry, "outliers": run_outliers, "tile": run_tile}[spec["phase"]](spec, units, ctx)
