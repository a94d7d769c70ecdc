"""The calibrated sky against the injected background (stages/sky_truth.py), and the mosaic-offset limit that
allows for the absolute fit's own error (stages/science.offset_limit_px, astrometry_truth.absolute_fit_error_mas)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dream_hpc.stages import astrometry_truth, science, sky_truth


def _cal(path: Path, level: float, seed: int) -> Path:
    from stdatamodels.jwst import datamodels

    rng = np.random.default_rng(seed)
    data = level + rng.normal(0.0, 0.02, (300, 300))
    yy, xx = np.mgrid[0:300, 0:300]
    for x, y in rng.uniform(20, 280, (30, 2)):  # sources the median must not see
        data += 5.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
    data[:4] = np.nan  # reference rows: NaN after Image2
    model = datamodels.ImageModel(data=data.astype(np.float32), dq=np.zeros(data.shape, np.uint32))
    model.save(path)
    return path


def test_injected_level_comes_back_and_a_calibration_error_does_not(tmp_path: Path) -> None:
    truth = {"model": "zodiacal (Leinert et al. 1998)", "mjy_sr": 0.23}
    good = sky_truth.check([(_cal(tmp_path / f"a{i}_cal.fits", 0.23, i), truth) for i in range(3)])
    assert good is not None and good["passed"], good
    assert good["median_ratio"] == pytest.approx(1.0, abs=0.005)
    # a 5% gain or units error common to every exposure: invisible to sky matching, caught here
    off = sky_truth.check([(_cal(tmp_path / f"b{i}_cal.fits", 0.23 * 1.05, i), truth) for i in range(3)])
    assert off is not None and not off["passed"] and off["median_ratio"] == pytest.approx(1.05, abs=0.005)
    assert good["judged"] and not sky_truth.check([(tmp_path / "a0_cal.fits", truth)], judged=False)["judged"]
    assert sky_truth.check([(tmp_path / "missing_cal.fits", truth)]) is None
    picked = sky_truth.sample(list(range(4864)))
    assert len(picked) == sky_truth.MAX_EXPOSURES and picked[0] == 0 and picked[-1] == 4863
    assert len(set(picked)) == len(picked) and sky_truth.sample([1, 2]) == [1, 2]


def test_offset_limit_allows_for_the_absolute_fits_own_error() -> None:
    # the demo's F150W absolute fit: 37 matches, RMS 10 mas -> 1.17 mas per axis
    alignment = {"absolute": {"status": "fitted", "matches": 37, "rmse_arcsec": 0.010}}
    err = astrometry_truth.absolute_fit_error_mas(alignment)
    assert err == pytest.approx(10.0 / math.sqrt(74))
    assert astrometry_truth.absolute_fit_error_mas({"absolute": {"status": "failed", "matches": 3,
                                                                 "rmse_arcsec": 0.01}}) is None
    limit = science.offset_limit_px(err, 0.03)
    assert limit == pytest.approx(math.hypot(science.MAX_OFFSET_PX, 3 * err / 30.0))
    assert science.offset_limit_px(None, 0.03) == science.MAX_OFFSET_PX  # no absolute fit: the pipeline's own
    r = {"offset_px": {"median_dx": 0.0, "median_dy": 0.12, "scatter_dx": 0.1, "scatter_dy": 0.1}}
    assert not science.astrometry_passed(r) and science.astrometry_passed(r, limit)  # last session's 3.6 mas
    r["offset_px"]["median_dy"] = 1.5 * limit  # a real misalignment still fails
    assert not science.astrometry_passed(r, limit)
