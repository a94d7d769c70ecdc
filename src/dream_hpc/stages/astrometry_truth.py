"""Astrometry against the truth, per exposure and per filter: before alignment (header WCS) and after.

Each exposure was rendered at its true pointing (stages/pointing_error.py), so its true WCS is
`apply(error, header wcs(pixel))`. Before alignment is the `_cal` WCS (the header's nominal pointing);
after is the WCS Image3 drizzled with (tweakreg's, as saved in the exposure's `_crf` by
outlier_detection). Both are compared with the truth on a grid of pixels over the exposure: no source
measurement enters, so the figure is the WCS error itself.

Tolerance: a third of a native pixel (10 mas SW, 20 mas LW), what drizzling at the native scale
tolerates without smearing the PSF measurably. An exposure left further off than that fails, which
is exactly the case of a group tweakreg could not fit while the pointing error exceeds the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.workunit import WorkUnit
from dream_hpc.stages import pointing_error

MAX_ERROR_MAS = {"SHORT": 10.0, "LONG": 20.0}
GRID = 5  # GRID x GRID pixels over each exposure


def _sky(path: Path, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    from stdatamodels.jwst import datamodels

    with datamodels.open(path) as model:
        ny, nx = model.data.shape[-2:]
        x, y = np.meshgrid(np.linspace(4, nx - 5, n), np.linspace(4, ny - 5, n))
        ra, dec = model.meta.wcs(x.ravel(), y.ravel())
    return np.asarray(ra, float), np.asarray(dec, float)


def _offsets_mas(ra: np.ndarray, dec: np.ndarray, ra_t: np.ndarray, dec_t: np.ndarray) -> np.ndarray:
    """(East, North) offsets of (ra, dec) from the truth, mas."""
    de = (ra - ra_t + 180.0) % 360.0 - 180.0
    return np.column_stack([de * np.cos(np.radians(dec_t)), dec - dec_t]) * 3.6e6


def _summary(d: np.ndarray) -> dict[str, float]:
    mean = d.mean(axis=0)
    return {"de_mas": float(mean[0]), "dn_mas": float(mean[1]), "rms_mas": float(np.sqrt(np.mean(np.sum(d**2, 1))))}


def crf_path(run: Any, unit: WorkUnit) -> Path:
    return run.mosaic / f"{unit.unit_id}_o{unit.observation:03d}_crf.fits"


def check_exposures(run: Any, units: Sequence[WorkUnit], alignment: dict[str, Any] | None,
                    crf_of: Callable[[Any, WorkUnit], Path] = crf_path) -> dict[str, Any]:
    """Per exposure and per filter: WCS error against the truth before and after alignment (the WCS
    each exposure was drizzled with: its `_crf`, from the single Image3 or a tiled mosaic's outliers task)."""
    from dream_hpc.stages.contract import product_path
    from dream_hpc.stages.truth_products import read_pointing

    aligned = {g["group"]: g["aligned"] for g in (alignment or {}).get("groups", [])}
    rows, before_all, after_all = [], [], []
    channel = units[0].channel if units else "SHORT"
    tol = MAX_ERROR_MAS[channel]
    for unit in sorted(units, key=lambda u: u.unit_id):
        record = read_pointing(run, unit.unit_id)
        cal = product_path(run, unit, "image2")
        if record is None or not cal.is_file():
            rows.append({"unit_id": unit.unit_id, "error": "no truth pointing or no _cal"})
            continue
        err = pointing_error.from_record(record)
        ra, dec = _sky(cal)
        ra_t, dec_t = pointing_error.apply(err, unit, ra, dec)
        before = _offsets_mas(ra, dec, ra_t, dec_t)
        row: dict[str, Any] = {"unit_id": unit.unit_id, "group": pointing_error.exposure_key(unit),
                               "injected_mas": err.total_mas, "injected_roll_arcsec": err.roll_arcsec,
                               "before": _summary(before), "after": None,
                               "aligned": aligned.get(pointing_error.exposure_key(unit))}
        before_all.append(before)
        crf = crf_of(run, unit)
        if crf.is_file():
            ra_a, dec_a = _sky(crf)
            after = _offsets_mas(ra_a, dec_a, ra_t, dec_t)
            row["after"] = _summary(after)
            after_all.append(after)
        rows.append(row)
    out: dict[str, Any] = {"tolerance_mas": tol, "channel": channel, "exposures": rows,
                           "method": f"header WCS (before) and Image3's WCS (after, from each _crf) against the true "
                                     f"pointing on a {GRID}x{GRID} pixel grid per exposure"}
    out["before"] = _summary(np.vstack(before_all)) if before_all else None
    out["after"] = _summary(np.vstack(after_all)) if after_all else None
    worst = [r["after"]["rms_mas"] for r in rows if r.get("after")]
    out["worst_after_mas"] = max(worst) if worst else None
    checked = bool(worst) and len(worst) == len(rows)
    out["passed"] = bool(checked and max(worst) <= tol)
    out["failed_exposures"] = [r["unit_id"] for r in rows if not r.get("after") or r["after"]["rms_mas"] > tol]
    return out


def mosaic_offset_mas(science: dict[str, Any]) -> dict[str, float] | None:
    """The science check's median source offset (output - truth, mosaic pixels) in mas."""
    off, px = science.get("offset_px") or {}, science.get("pixel_arcsec")
    if not px or off.get("median_dx") is None or not math.isfinite(off["median_dx"]):
        return None
    return {"median_dx_mas": off["median_dx"] * px * 1000.0, "median_dy_mas": off["median_dy"] * px * 1000.0,
            "scatter_dx_mas": off["scatter_dx"] * px * 1000.0, "scatter_dy_mas": off["scatter_dy"] * px * 1000.0}



def absolute_fit_error_mas(alignment: dict[str, Any] | None) -> float | None:
    """Per-axis standard error (mas) of the shift tweakreg's absolute fit found: its residual RMS (2D, so
    / sqrt 2 per axis) over sqrt(matches). It holds the reference catalog's own errors and the centroids':
    an alignment is no truer than that. A tiled mosaic reports its worst visit (largest RMS, fewest matches)."""
    fit = (alignment or {}).get("absolute") or {}
    rmse, n = fit.get("rmse_arcsec"), fit.get("matches")
    if fit.get("status") != "fitted" or not rmse or not n:
        return None
    return float(rmse) * 1000.0 / math.sqrt(2.0 * float(n))
