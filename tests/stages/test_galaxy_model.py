"""The galaxy aper_total model (stages/galaxy_model.py): Mirage's rendering reproduced, jwst's measurement
applied to it. Fast (no chain); the end-to-end check against the truth is the demo's science check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dream_hpc.stages import galaxy_model as gm


def _moffat_psf(fwhm: float = 1.7, half: int = 20) -> np.ndarray:
    u = np.arange(-half, half + 1)
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1 / 1.6) - 1.0))
    psf = (1.0 + r2 / alpha**2) ** -1.6
    return psf / psf.sum()


APERTURE = gm.Aperture(radius_px=2.8, sky_in_px=17.0, sky_out_px=25.0)


def test_the_ideal_profile_holds_its_total_even_with_a_cusp() -> None:
    for n in (0.5, 1.0, 4.0):
        for r in (0.05, 0.3, 1.0, 2.9):
            for q in (1.0, 0.4):
                assert gm.sersic_image(r, n, q, 40).sum() == pytest.approx(1.0, abs=0.02), (n, r, q)


def test_the_mirage_rendering_is_mirages_own() -> None:
    """Our copy of Mirage's Sersic stamp against Mirage's create_galaxy (which uses no instance state)."""
    from mirage.seed_image.catalog_seed_image import Catalog_seed

    for r_eff, n, q in ((3.0, 1.0, 0.6), (2.8, 3.3, 0.8), (6.0, 2.4, 0.3), (0.8, 4.0, 1.0)):
        stamp = Catalog_seed.create_galaxy(None, r_eff, 1.0 - q, n, 0.0, 1.0, 0.0, 0.0)
        half = 30
        ours = gm.mirage_sersic_image(r_eff, n, q, half)
        ny, nx = stamp.shape
        theirs = np.zeros_like(ours)
        cy, cx = ny // 2, nx // 2
        hy, hx = min(cy, half), min(cx, half)
        theirs[half - hy:half + hy + 1, half - hx:half + hx + 1] = stamp[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1]
        assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-9), (r_eff, n, q)


def test_point_sources_have_no_bias_and_big_galaxies_lose_light() -> None:
    model = gm.ApertureModel(_moffat_psf(), APERTURE)
    for rendering in ("mirage", "ideal"):
        assert model.bias_mag(0.01, 1.0, 1.0, rendering=rendering) == pytest.approx(0.0, abs=0.02)
    sizes = [1.0, 3.0, 8.0]
    disk = [model.bias_mag(r, 1.0, 0.7) for r in sizes]
    assert disk[0] > 0.02 and np.all(np.diff(disk) > 0.3)  # light beyond R, and in the sky annulus


def test_mirage_makes_compact_high_index_galaxies_point_like() -> None:
    """The pixel-centre sample of an n ~ 3 cusp carries most of Mirage's stamp: measured on the demo,
    such galaxies' aper_total is ~0.1 mag faint where their profile predicts ~0.8."""
    model = gm.ApertureModel(_moffat_psf(), APERTURE)
    ideal = model.bias_mag(2.8, 3.3, 0.8, rendering="ideal")
    mirage = model.bias_mag(2.8, 3.3, 0.8, rendering="mirage")
    assert ideal > 0.5 and mirage < 0.25


def test_the_annulus_median_of_noise_and_galaxy() -> None:
    rng = np.random.default_rng(1)
    values = rng.exponential(1.0, 2000)  # skewed: median ln 2, mean 1
    assert gm.noisy_median(values, 0.0) == pytest.approx(np.median(values))
    assert gm.noisy_median(values, 100.0) == pytest.approx(values.mean(), abs=0.02)
    noisy = values + rng.normal(0.0, 1.0, (200, values.size))
    assert gm.noisy_median(values, 1.0) == pytest.approx(np.median(np.median(noisy, axis=1)), abs=0.01)


def test_predict_fills_only_the_candidates() -> None:
    model = gm.ApertureModel(_moffat_psf(), APERTURE)
    cand = np.array([True, False, True])
    pred = gm.predict(model, cand, np.array([22.0, 22.0, 23.0]), np.array([3.0, 3.0, 0.01]),
                      np.array([1.0, 1.0, 1.0]), np.array([0.7, 0.7, 1.0]), np.full(3, 1e-3), 1e-13, 0.7, "a PSF")
    assert np.isnan(pred.bias[1]) and np.isnan(pred.fraction[1])
    assert pred.bias[0] > 0.1 and pred.bias[2] == pytest.approx(0.0, abs=0.02)
    assert pred.fraction[2] == pytest.approx(0.7, abs=0.02)  # a point source: the catalog's own EE
