"""Galaxies judged on their own: the completeness curve and the aperture-bias model (fast, no chain)."""

from __future__ import annotations

import numpy as np
import pytest

from dream_hpc.stages import galaxy_check


def test_completeness_curve_finds_the_90_and_50_percent_magnitudes() -> None:
    rng = np.random.default_rng(2)
    mag = rng.uniform(22.0, 28.0, 4000)
    p_detect = 1.0 / (1.0 + np.exp((mag - 26.0) / 0.3))  # 50% at 26.0, 90% at 26 - 0.3 ln 9 = 25.34
    found = rng.random(mag.size) < p_detect
    curve = galaxy_check.completeness_curve(mag, found)
    assert curve["mag50"] == pytest.approx(26.0, abs=0.15)
    assert curve["mag90"] == pytest.approx(25.34, abs=0.2)
    assert galaxy_check.completeness_curve(mag, np.ones(mag.size, bool))["mag50"] is None  # never incomplete


def test_aperture_bias_grows_with_size_and_vanishes_for_points() -> None:
    sizes = np.array([0.0, 1.0, 3.0, 8.0])
    bias = galaxy_check.expected_aper_total_bias(sizes, radius_px=4.0, psf_half_px=1.5)
    assert bias[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(bias) > 0)  # larger galaxies lose more light outside the aperture: measured fainter


def test_too_few_galaxies_are_not_judged() -> None:
    n = 5
    pts = {"is_star": np.zeros(n, bool), "snr": np.full(n, 50.0), "matched": np.ones(n, bool),
           "mag_in": np.full(n, 23.0), "resid_total": np.zeros(n), "size_px": np.zeros(n)}
    rep = galaxy_check.galaxy_report(pts, np.ones(n, bool), 4.0, 1.5, 20.0, 0.9, 0.1)
    assert not rep["judged"] and rep["passed"] == {"completeness": None, "photometry": None}
    assert "too few galaxies" in rep["verdict"]


def test_the_modelled_bias_is_what_is_judged() -> None:
    n = 30
    rng = np.random.default_rng(3)
    bias = rng.uniform(0.0, 1.5, n)
    pts = {"is_star": np.zeros(n, bool), "snr": np.full(n, 50.0), "matched": np.ones(n, bool),
           "mag_in": np.full(n, 23.0), "resid_total": bias + 0.02, "size_px": np.full(n, 4.0), "bias": bias}
    rep = galaxy_check.galaxy_report(pts, np.ones(n, bool), 4.0, 1.5, 20.0, 0.9, 0.1, "model")
    assert rep["judged"] and rep["passed"] == {"completeness": True, "photometry": True}
    assert rep["aper_total_residual"]["median_after_bias_model"] == pytest.approx(0.02)
    pts["resid_total"] = bias + 0.3  # 0.3 mag more than the model expects: fails
    rep = galaxy_check.galaxy_report(pts, np.ones(n, bool), 4.0, 1.5, 20.0, 0.9, 0.1, "model")
    assert rep["passed"]["photometry"] is False


def test_counted_sources_give_the_same_completeness_tables_as_kept_ones() -> None:
    """A tiled check keeps only judged or matched sources and counts the rest per magnitude bin
    (stages/tile_science.py): the tables must come out as if every source had been kept."""
    from dream_hpc.stages import science

    rng = np.random.default_rng(3)
    mag = np.round(rng.uniform(20.0, 28.0, 4000), 1)  # some exactly on bin edges
    matched = rng.random(mag.size) < np.clip((27.0 - mag) / 4.0, 0, 1)
    sample = matched & (mag < 24.0) | (rng.random(mag.size) < 0.02)
    keep = matched | sample
    rest = np.floor(mag[~keep] / 0.5).astype(int)
    counted = {int(k): int(c) for k, c in zip(*np.unique(rest, return_counts=True), strict=True)}
    assert counted and (~keep).sum() > 1000
    assert science.completeness_by_mag(mag[keep], matched[keep], sample[keep], counted=counted) == \
        science.completeness_by_mag(mag, matched, sample)
    assert galaxy_check.completeness_curve(mag[keep], matched[keep], counted) == \
        galaxy_check.completeness_curve(mag, matched)
    rows = science.completeness_by_mag(mag, matched, sample)
    assert sum(r["n"] for r in rows) == mag.size  # every source in a bin, the brightest and faintest too
