"""Unlit reference pixels left valid put false steps between exposures (the demo's F150W sky matching at
10 sigma), and the kit's FLAT is what keeps them out (refkit/crds_refs.flat_dq).

Real stcal skymatch on two overlapping images of one uniform sky that carry, like a corner subarray
(SUB400P), 4 columns and rows of reference pixels reading zero on two sides: counted as data they sit in
one image's part of an overlap and not the other's, and bias its median; flagged, the sky matches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N, BORDER, SHIFT, SCALE = 200, 4, 150, 0.03 / 3600.0  # px, px, px, deg/px
SKY, NOISE = 0.47, 0.23  # MJy/sr: the demo's F150W crf level and pixel noise


def _images(flag_border: bool):
    from stcal.skymatch.skyimage import SkyImage
    from stcal.skymatch.skystatistics import SkyStats

    rng = np.random.default_rng(5)
    out = []
    for k, x0 in enumerate((0, SHIFT)):
        data = SKY + NOISE * rng.standard_normal((N, N))
        border = np.zeros((N, N), bool)
        border[-BORDER:, :] = border[:, -BORDER:] = True  # a corner subarray (SUB400P): two sides
        data[border] = 0.0  # reference pixels see no light
        mask = ~border if flag_border else np.ones((N, N), bool)

        def fwd(x, y, with_bounding_box=False, x0=x0):
            return 150.0 + (np.asarray(x) + x0) * SCALE, 2.0 + np.asarray(y) * SCALE

        def inv(ra, dec, with_bounding_box=False, x0=x0):
            return (np.asarray(ra) - 150.0) / SCALE - x0, (np.asarray(dec) - 2.0) / SCALE

        out.append(SkyImage(data, mask, fwd, inv, SkyStats(skystat="median", nclip=5, lsig=4.0, usig=4.0),
                            sky_id=k))
    return out


@pytest.mark.parametrize("flag_border", [False, True])
def test_unlit_edges_fake_a_sky_step_unless_flagged(flag_border: bool) -> None:
    from stcal.skymatch.skymatch import skymatch

    images = _images(flag_border)
    skymatch(images, skymethod="match", match_down=True, subtract=False)
    step = abs(images[0].sky - images[1].sky)
    overlap_pixels = (N - SHIFT) * N
    sigma = NOISE * 1.2533 / np.sqrt(overlap_pixels) * np.sqrt(2.0)  # error of a difference of two medians
    if flag_border:
        assert step < 4 * sigma
    else:
        assert step > 5 * sigma  # what the demo's sky check caught


def test_the_kits_flat_flags_the_reference_pixels(refkit_dir: Path) -> None:
    from astropy.io import fits
    from stdatamodels.jwst.datamodels import dqflags

    flats = sorted((refkit_dir / "crds_cache" / "references" / "jwst" / "nircam").glob("jwst_nircam_flat_*.fits"))
    assert flats
    for path in flats:
        dq = fits.getdata(path, "DQ")
        border = np.ones(dq.shape, bool)
        border[4:-4, 4:-4] = False
        assert np.all(dq[border] & dqflags.pixel["DO_NOT_USE"]), path.name  # flat_field then NaNs them
        assert not np.any(dq[~border] & dqflags.pixel["REFERENCE_PIXEL"]), path.name


def test_a_pairs_error_counts_background_structure_not_only_pixels() -> None:
    """White noise: the block term equals the white-noise error of the median (no inflation); a smooth
    0.6% gradient across the overlap that no single level represents (the FULL-frame demo's F277W):
    the error grows to its size."""
    from dream_hpc.stages.sky_check import _median_error

    rng = np.random.default_rng(7)
    n = 1024
    y, x = (v.ravel() for v in np.mgrid[0:n, 0:n])
    flat = 0.0086 * rng.standard_normal(n * n)
    white = 0.0086 * 1.2533 / np.sqrt(n * n)
    assert _median_error(flat, x, y) == pytest.approx(white, rel=0.5)
    gradient = flat + np.linspace(-0.0005, 0.0005, n)[y]
    assert _median_error(gradient, x, y) > 3 * white and _median_error(gradient, x, y) > 3e-5
