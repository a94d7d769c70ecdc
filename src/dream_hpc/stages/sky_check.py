"""Sky matching checked: background levels between overlapping exposures after skymatch, and the mosaic's.

Image3's skymatch (default `match`, `subtract=False`) records a level per exposure that resample
removes when drizzling. skymatch fits those levels to the differences it sees where exposures
overlap, so that is where they are judged: for each pair of overlapping exposures (their `_crf`, as
drizzled), the source-masked median of (a - level_a) - (b - level_b) over the sky both cover (a third
of a's pixels, on a lattice holding every column and row parity: sample_pixels), in units
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
LATTICE = 3  # pair pixels: the first exposure's pixels with (x - y) divisible by 3 (see sample_pixels)
MIN_OVERLAP = 200  # usable sampled pixels for a pair to be judged
BOX_PAD = 0.02  # the second exposure's corner box on the sky, widened by 2% per side (edges bulge)


def sample_pixels(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the pixels a pair is judged on: every pixel with (x - y) % 3 == 0.

    Why this lattice: a third of the pixels and no two sharing an edge (IPC couples edge neighbours
    most), like the every-2nd-pixel-per-axis grid it replaces, but it holds every column parity, row
    parity and their combination in equal numbers. The grid held one column and one row parity of the
    first exposure and, through the pair's shift, one fixed parity of the second, so any pattern of
    period 2 entered the median as a level: refpix's odd/even column correction (a subarray's 4
    reference rows per parity give each exposure its own odd-even column offset; SUB400P in the 1/f kit:
    up to -0.009 DN/s = -0.022 MJy/sr, shared by the exposures that drew one dark) put two dithers
    whose x shift is odd 0.022 MJy/sr = 6.3 sigma apart while skymatch, which uses every pixel, had
    matched them to 0.001. With both parities of both exposures in equal numbers an offset +-d/2
    splits the differences into two equal halves at +-(d_a +- d_b)/2 about the true level: the median
    stays on it (the spread grows by a negligible (d/2)^2 against the pixel variance)."""
    ny, nx = shape
    y, x = (v.ravel() for v in np.mgrid[0:ny, 0:nx])
    keep = (x - y) % LATTICE == 0
    return y[keep], x[keep]


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


def exposure_for_pairs(name: str, data: np.ndarray, usable: np.ndarray, wcs: Any) -> dict[str, Any]:
    """What pair_difference needs of one exposure (its data already minus its skymatch level): the
    source-masked sky, and the sky position of its sampled sky pixels (computed once, not per pair)."""
    from dream_hpc.stages.striping import source_mask

    clean = usable & ~source_mask(data, ~usable)
    y, x = sample_pixels(data.shape)
    keep = clean[y, x]
    y, x = y[keep], x[keep]
    ra, dec = wcs(x, y)
    ny, nx = data.shape
    cra, cdec = wcs(np.array([0, nx - 1, nx - 1, 0]), np.array([0, 0, ny - 1, ny - 1]))
    box = (float(np.min(cra)), float(np.max(cra)), float(np.min(cdec)), float(np.max(cdec)))
    return {"name": name, "wcs": wcs, "data": data, "clean": clean, "box": box,
            "x": x, "y": y, "ra": np.asarray(ra), "dec": np.asarray(dec)}


def pair_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The median of a - b over their common source-masked sky (a's sampled pixels, b's nearest pixel),
    and its error; None when they share fewer than MIN_OVERLAP such pixels."""
    (ra0, ra1, de0, de1), (rb0, rb1, db0, db1) = a["box"], b["box"]
    if ra1 < rb0 or rb1 < ra0 or de1 < db0 or db1 < de0:
        return None
    pr, pd = BOX_PAD * (rb1 - rb0), BOX_PAD * (db1 - db0)
    near = (a["ra"] >= rb0 - pr) & (a["ra"] <= rb1 + pr) & (a["dec"] >= db0 - pd) & (a["dec"] <= db1 + pd)
    x, y = a["x"][near], a["y"][near]
    if x.size < MIN_OVERLAP:
        return None
    xb, yb = b["wcs"].invert(a["ra"][near], a["dec"][near])
    xb, yb = np.asarray(xb, float), np.asarray(yb, float)
    ok = np.isfinite(xb) & np.isfinite(yb)
    xi, yi = np.round(np.where(ok, xb, -1)).astype(int), np.round(np.where(ok, yb, -1)).astype(int)
    nyb, nxb = b["data"].shape
    ok &= (xi >= 0) & (xi < nxb) & (yi >= 0) & (yi < nyb)
    ok[ok] &= b["clean"][yi[ok], xi[ok]]
    if np.count_nonzero(ok) < MIN_OVERLAP:
        return None
    diff = a["data"][y[ok], x[ok]] - b["data"][yi[ok], xi[ok]]
    err = _median_error(diff, x[ok], y[ok])
    med = float(np.median(diff))
    return {"a": a["name"], "b": b["name"], "n": int(np.count_nonzero(ok)), "difference": med,
            "error": err, "sigma": med / err if err > 0 else float("nan")}


def pair_differences(crf_paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Per overlapping pair: the median level difference after skymatch over their common sky, and its error."""
    from stdatamodels.jwst import datamodels

    exposures = []
    for path in crf_paths:
        model = datamodels.open(path)
        data = np.array(model.data, float)
        usable = np.isfinite(data) & ((np.asarray(model.dq) & 1) == 0)
        level = model.meta.background.level
        level = 0.0 if model.meta.background.subtracted or level is None else float(level)
        exposures.append(exposure_for_pairs(path.name, data - level, usable, model.meta.wcs))
        model.close()
    pairs = (pair_difference(a, b) for a, b in itertools.combinations(exposures, 2))
    return [p for p in pairs if p is not None]


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
                      "sky (a's pixels with (x - y) % 3 == 0: every column and row parity), in units of that median's error"}
