"""Sky matching checked: background levels between overlapping exposures after skymatch, and the mosaic's.

Image3's skymatch (default `match`, `subtract=False`) records a level per exposure that resample
removes when drizzling. skymatch fits those levels to the differences it sees where exposures
overlap, so that is where they are judged: for each pair of overlapping exposures (their `_crf`, as
drizzled), the source-masked median of (a - level_a) - (b - level_b) over the sky both cover, in units
of that median's error (1.2533 sigma / sqrt(n) of the difference; or, where 1/f stripes correlate
rows, the row medians' scatter / sqrt(rows); or, where the background has large-scale structure, the
scatter of the overlap's 8 x 8 block medians / 8). Comparing each exposure's whole-area median instead
(this module's first version) judged skymatch where it never looked: a detector's background varies
by ~0.01-0.02 MJy/sr across the frame (flat and dark residuals, 1/f), 10x the error of a whole-frame
median, so levels right for the overlaps looked 10 sigma wrong. Also reported: each exposure's
whole-area median, and the mosaic's source-masked background median in units of its pixel noise
(what a user subtracting nothing would be left with).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _masked_level(data: np.ndarray, usable: np.ndarray) -> tuple[float, float, int]:
    """(median, its error, n) of the source-masked background of `data` where `usable`."""
    from dream_hpc.stages.striping import source_mask

    mask = source_mask(data, ~usable)
    values = data[~mask]
    if values.size < 100:
        return float("nan"), float("nan"), int(values.size)
    med = float(np.median(values))
    sigma = float(1.4826 * np.median(np.abs(values - med)))
    white = sigma * 1.2533 / math.sqrt(values.size)
    # 1/f stripes correlate whole rows: the error of the median is then the rows' scatter / sqrt(rows)
    rows = [np.median(data[y][~mask[y]]) for y in range(data.shape[0]) if (~mask[y]).sum() >= 0.5 * data.shape[1]]
    striped = float(1.4826 * np.median(np.abs(np.asarray(rows) - np.median(rows))) / math.sqrt(len(rows))) \
        if len(rows) > 10 else 0.0
    return med, max(white, striped), int(values.size)


def exposure_levels(crf_paths: Sequence[Path]) -> list[dict[str, Any]]:
    from stdatamodels.jwst import datamodels

    out = []
    for path in crf_paths:
        with datamodels.open(path) as model:
            data = np.array(model.data, float)
            usable = np.isfinite(data) & ((np.asarray(model.dq) & 1) == 0)
            level = model.meta.background.level
            subtracted = bool(model.meta.background.subtracted)
        med, err, n = _masked_level(data, usable)
        matched = med - (0.0 if subtracted or level is None else float(level))
        out.append({"exposure": path.name, "skymatch_level": level, "median": med, "after_match": matched,
                    "error": err, "n": n})
    return out


BLOCKS = 8  # blocks per axis of an overlap for the background-structure term of a pair's error
SAMPLE_STEP = 2  # every 2nd pixel per axis of the first exposure of a pair: IPC-correlated neighbours left out
MIN_OVERLAP = 200  # usable sampled pixels for a pair to be judged


def _footprint_box(model: Any) -> tuple[float, float, float, float]:
    """(ra min, ra max, dec min, dec max) of the exposure's corners, degrees (a quick overlap test)."""
    ny, nx = model.data.shape
    ra, dec = model.meta.wcs([0, nx - 1, nx - 1, 0], [0, 0, ny - 1, ny - 1])
    return float(np.min(ra)), float(np.max(ra)), float(np.min(dec)), float(np.max(dec))


def _median_error(diff: np.ndarray, x: np.ndarray, y: np.ndarray, blocks: int = BLOCKS) -> float:
    """Error of the median of a pair's differences at pixels (x, y) of the first exposure: the white-noise
    error, or, where 1/f stripes correlate rows, the row medians' scatter / sqrt(rows), or, where the
    background has large-scale structure that no single level represents (flat and pixel-area residuals,
    amplifier offsets, 1/f remnants), the scatter of the overlap's blocks x blocks block medians /
    sqrt(blocks). Measured on the FULL-frame demo: F277W's background varies +-0.0005 MJy/sr (0.6%) across
    a detector while the white-noise error of a 3.3-Mpixel median is 0.00001."""
    def scatter_of_medians(groups: np.ndarray, min_n: int) -> float:
        order = np.argsort(groups, kind="stable")
        _, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
        sorted_diff = diff[order]
        meds = [np.median(sorted_diff[a:a + n]) for a, n in zip(starts, counts, strict=True) if n >= min_n]
        if len(meds) <= 10:
            return 0.0
        m = np.asarray(meds)
        return 1.4826 * float(np.median(np.abs(m - np.median(m)))) / math.sqrt(len(m))

    med = float(np.median(diff))
    white = 1.2533 * 1.4826 * float(np.median(np.abs(diff - med))) / math.sqrt(diff.size)
    striped = scatter_of_medians(y, 20)
    bx = ((x - x.min()) * blocks // max(int(np.ptp(x)) + 1, 1)).astype(np.int64)
    by = ((y - y.min()) * blocks // max(int(np.ptp(y)) + 1, 1)).astype(np.int64)
    structure = scatter_of_medians(by * blocks + bx, 25)
    return max(white, striped, structure)


def pair_differences(crf_paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Per overlapping pair: the median level difference after skymatch over their common sky, and its error."""
    from stdatamodels.jwst import datamodels

    from dream_hpc.stages.striping import source_mask

    exposures = []
    for path in crf_paths:
        model = datamodels.open(path)
        data = np.array(model.data, float)
        usable = np.isfinite(data) & ((np.asarray(model.dq) & 1) == 0)
        level = model.meta.background.level
        level = 0.0 if model.meta.background.subtracted or level is None else float(level)
        exposures.append({"name": path.name, "wcs": model.meta.wcs, "data": data - level,
                          "clean": usable & ~source_mask(data, ~usable), "box": _footprint_box(model)})
        model.close()
    out = []
    for a, b in itertools.combinations(exposures, 2):
        (ra0, ra1, de0, de1), (rb0, rb1, db0, db1) = a["box"], b["box"]
        if ra1 < rb0 or rb1 < ra0 or de1 < db0 or db1 < de0:
            continue
        ny, nx = a["data"].shape
        y, x = (v.ravel() for v in np.mgrid[0:ny:SAMPLE_STEP, 0:nx:SAMPLE_STEP])
        keep = a["clean"][y, x]
        x, y = x[keep], y[keep]
        ra, dec = a["wcs"](x, y)
        xb, yb = b["wcs"].invert(ra, dec)
        ok = np.isfinite(xb) & np.isfinite(yb)
        xi, yi = np.round(np.where(ok, xb, -1)).astype(int), np.round(np.where(ok, yb, -1)).astype(int)
        nyb, nxb = b["data"].shape
        ok &= (xi >= 0) & (xi < nxb) & (yi >= 0) & (yi < nyb)
        ok[ok] &= b["clean"][yi[ok], xi[ok]]
        if np.count_nonzero(ok) < MIN_OVERLAP:
            continue
        diff = a["data"][y[ok], x[ok]] - b["data"][yi[ok], xi[ok]]
        err = _median_error(diff, x[ok], y[ok])
        med = float(np.median(diff))
        out.append({"a": a["name"], "b": b["name"], "n": int(np.count_nonzero(ok)), "difference": med,
                    "error": err, "sigma": med / err if err > 0 else float("nan")})
    return out


def check(crf_paths: Sequence[Path], i2d: Path) -> dict[str, Any]:
    """Pairwise level differences after skymatch where exposures overlap (in sigma), and the mosaic
    background (in pixel sigma)."""
    from stdatamodels.jwst import datamodels

    levels = exposure_levels(crf_paths)
    pairs = pair_differences(crf_paths)
    with datamodels.open(i2d) as model:
        data = np.array(model.data, float)
        usable = np.isfinite(data) & (np.asarray(model.wht) > 0)
    med, err, n = _masked_level(data, usable)
    vals = data[usable]
    pix_sigma = float(1.4826 * np.median(np.abs(vals - np.median(vals)))) if vals.size else float("nan")
    finite = [abs(p["sigma"]) for p in pairs if math.isfinite(p["sigma"])]
    worst = max(pairs, key=lambda p: abs(p["sigma"]) if math.isfinite(p["sigma"]) else -1.0) if pairs else None
    return {"exposures": levels, "pairs": pairs, "n_pairs": len(pairs),
            "max_abs_pair_difference_sigma": max(finite) if finite else None,
            "median_abs_pair_difference_sigma": float(np.median(finite)) if finite else None,
            "worst_pair": worst and {k: worst[k] for k in ("a", "b", "difference", "error", "sigma", "n")},
            "mosaic_background_median": med, "mosaic_pixel_sigma": pix_sigma,
            "mosaic_background_in_pixel_sigma": med / pix_sigma if pix_sigma else None,
            "method": "per overlapping pair, median of (a - level_a) - (b - level_b) over their common source-masked "
                      f"sky (every {SAMPLE_STEP}nd pixel of a), in units of that median's error"}
