"""How striped is a rate image? The source-masked row-median scatter, against what white noise gives.

1/f readout noise shows in NIRCam rate images as horizontal stripes: whole rows (per amplifier)
offset together. Measured here as survey teams look at it (CEERS' remstriping, Willott's
image1overf): mask sources (2.5 sigma above the clipped background, grown by 3 pixels), bad and
reference pixels; take each row's median of the remaining pixels; the robust scatter of those row
medians is the striping amplitude (DN/s). White noise alone would give sigma_pix * 1.2533 / sqrt(n)
per row (the median's error), reported beside it, so `excess` ~1 means no striping left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SOURCE_SIGMA = 2.5
GROW_PX = 3
MIN_ROW_FRACTION = 0.5  # a row needs this fraction of unmasked pixels to count


def _robust_std(v: np.ndarray) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else float("nan")


def source_mask(data: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """True on pixels of sources (and their surroundings) or bad pixels."""
    from scipy.ndimage import binary_dilation

    good = ~bad & np.isfinite(data)
    med = float(np.median(data[good]))
    sigma = _robust_std(data[good])
    hot = good & (data > med + SOURCE_SIGMA * sigma)
    grown = binary_dilation(hot, iterations=GROW_PX)
    return grown | ~good


def row_striping(data: np.ndarray, bad: np.ndarray) -> dict[str, Any]:
    """Striping amplitude of one 2D image (rows along the fast axis)."""
    masked = source_mask(data, bad)
    rows, n_used = [], []
    for y in range(data.shape[0]):
        keep = ~masked[y]
        if keep.mean() >= MIN_ROW_FRACTION:
            rows.append(float(np.median(data[y, keep])))
            n_used.append(int(keep.sum()))
    rows_a = np.asarray(rows)
    sigma_pix = _robust_std(data[~masked])
    white = sigma_pix * 1.2533 / np.sqrt(np.median(n_used)) if n_used else float("nan")
    amp = _robust_std(rows_a - np.median(rows_a)) if rows_a.size else float("nan")
    return {"row_median_scatter": amp, "white_noise_expectation": float(white),
            "excess": float(amp / white) if white and np.isfinite(white) else float("nan"),
            "n_rows": int(rows_a.size), "pixel_sigma": sigma_pix}


def rate_striping(rate: Path) -> dict[str, Any]:
    """Striping of a `_rate.fits` (DN/s), reference pixels and DO_NOT_USE pixels excluded."""
    from astropy.io import fits

    with fits.open(rate) as hdul:
        data = np.array(hdul["SCI"].data, float)
        dq = np.array(hdul["DQ"].data, np.uint32) if "DQ" in hdul else np.zeros(data.shape, np.uint32)
    bad = (dq & (1 | 2**31)) != 0  # DO_NOT_USE, REFERENCE_PIXEL
    out = row_striping(data, bad)
    out["unit"] = "DN/s"
    return out
