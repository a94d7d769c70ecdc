"""The calibrated sky against the sky that was simulated: does the pipeline give back the injected background?

Each exposure's background was put in by Mirage as a count rate (`simulation.background_rate`, per filter
from stages/zodiacal.py by default) and is recorded as MJy/sr through the same PHOTMJSR the kit's photom
reference holds. After Detector1 and Image2 (`_cal`: dark, flat and photom applied, no sky subtracted) the
source-masked median of the frame should be that level. A ratio away from 1 is a calibration-chain error
that every flux in the mosaic shares (a gain, pixel-area, flat-normalisation or units mistake), which the
relative checks downstream (sky matching, photometry against the truth's magnitudes) can hide when it is
common to all exposures.

The tolerance is the flux calibration's own stated uncertainty (the PHOTOM table's 1%), three times:
faint galaxies below detection add light to the median at the ~1% level at the real sky's depth.

Judged on FULL frames only. A subarray's calibrated sky also carries a per-exposure offset that refpix cannot
remove with a subarray's few reference pixels (SUB400P: 4 rows on one side; the kit's darks drift per
frame and per amplifier, as real ones do), shared by exposures that drew the same dark realization, and
growing as the ramp shortens. Measured on SUB400P: calibrated / injected 1.23 and 1.51 for BRIGHT2 x 4
(13 s), 1.00-1.06 for MEDIUM8 x 4 (50 s); on the FULL demo 0.995-1.002. There the ratio is reported, not
judged: it is the detector's residual, not the calibration's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.refkit.photometry import PHOTOM_UNCERTAINTY

TOLERANCE = 3 * PHOTOM_UNCERTAINTY  # |measured / injected - 1| of the filter's median exposure


MAX_EXPOSURES = 24  # judged per filter: the verdict is on a median; a survey's 4,864 frames would take ~1.5 h


def sample(items: Sequence[Any], n: int = MAX_EXPOSURES) -> list[Any]:
    """At most `n` of `items`, evenly spread over them (first and last included): deterministic."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def measured_sky(cal: Path) -> float:
    """Source-masked median of a `_cal` frame's usable pixels (MJy/sr)."""
    from stdatamodels.jwst import datamodels

    from dream_hpc.stages.striping import source_mask

    with datamodels.open(cal) as model:
        data = np.array(model.data, float)
        bad = ~np.isfinite(data) | ((np.asarray(model.dq) & 1) != 0)
    keep = ~source_mask(data, bad)
    return float(np.median(data[keep])) if keep.sum() >= 100 else float("nan")


def check(exposures: Sequence[tuple[Path, dict[str, Any]]], judged: bool = True) -> dict[str, Any] | None:
    """(cal path, background truth) per exposure -> per exposure injected/measured MJy/sr and their
    ratio, and the verdict on the median ratio (`judged`: False for subarrays, see the module's text)."""
    rows = []
    for cal, truth in exposures:
        if not cal.is_file():
            continue
        measured = measured_sky(cal)
        injected = float(truth["mjy_sr"])
        rows.append({"exposure": cal.name, "injected_mjy_sr": injected, "measured_mjy_sr": measured,
                     "ratio": measured / injected if injected > 0 else float("nan")})
    ratios = np.array([r["ratio"] for r in rows if np.isfinite(r["ratio"])])
    if not ratios.size:
        return None
    median = float(np.median(ratios))
    return {"model": exposures[0][1].get("model"), "exposures": rows, "median_ratio": median,
            "min_ratio": float(ratios.min()), "max_ratio": float(ratios.max()),
            "injected_mjy_sr": float(np.median([r["injected_mjy_sr"] for r in rows])),
            "tolerance": TOLERANCE, "judged": judged, "passed": bool(abs(median - 1.0) <= TOLERANCE)}
