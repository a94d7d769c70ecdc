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


class _ShiftWcs:
    """A tangent-plane stand-in for a gwcs: pixel (x, y) of an image whose origin sits x0, y0 pixels
    into the sky's pixel grid."""

    def __init__(self, x0: float, y0: float) -> None:
        self.x0, self.y0 = x0, y0

    def __call__(self, x, y):
        return 150.0 + (np.asarray(x) + self.x0) * SCALE, 2.0 + (np.asarray(y) + self.y0) * SCALE

    def invert(self, ra, dec):
        return (np.asarray(ra) - 150.0) / SCALE - self.x0, (np.asarray(dec) - 2.0) / SCALE - self.y0


def _dithers(odd_even: float, level_b: float = 0.0):
    """Two SUB400P-sized exposures of one uniform sky, 33 x 16 px apart (the small survey's 1" dither),
    each with an odd-minus-even column offset `odd_even` (what refpix's odd/even correction leaves in a
    subarray exposure: -0.022 MJy/sr for the dark realization the worst pair shared)."""
    from dream_hpc.stages.sky_check import exposure_for_pairs

    rng = np.random.default_rng(11)
    n, out = 400, []
    for k, (x0, y0) in enumerate(((0, 0), (33, 16))):
        data = SKY + NOISE * rng.standard_normal((n, n)) + (level_b if k else 0.0)
        data[:, 1::2] += odd_even / 2
        data[:, ::2] -= odd_even / 2
        out.append(exposure_for_pairs(f"e{k}", data, np.ones((n, n), bool), _ShiftWcs(x0, y0)))
    return out


def test_pairs_read_no_column_parity_pattern_as_a_level() -> None:
    """The pair statistic's pixels hold every column and row parity in equal numbers, so an odd/even
    column offset of each exposure leaves the median where the sky is; the every-2nd-pixel grid it
    replaces read it as a 6-sigma step between two dithers of one sky (the small survey's worst pair)."""
    from dream_hpc.stages.sky_check import pair_difference, sample_pixels

    y, x = sample_pixels((400, 400))
    classes = np.bincount(2 * (y % 2) + (x % 2), minlength=4)
    assert classes.min() > 0.99 * classes.max()  # every (column, row) parity alike
    assert not np.any((np.abs(np.diff(x)) == 1) & (np.diff(y) == 0))  # no two row neighbours sampled
    a, b = _dithers(-0.022)
    p = pair_difference(a, b)
    assert p is not None and p["n"] > 20_000 and abs(p["sigma"]) < 3.0, p
    gy, gx = (v.ravel() for v in np.mgrid[0:400:2, 0:400:2])  # the old lattice: every 2nd pixel per axis
    old = pair_difference({**a, "x": gx, "y": gy, **dict(zip(("ra", "dec"), a["wcs"](gx, gy), strict=True))}, b)
    assert old is not None and old["sigma"] > 5.0, old  # 33 px apart: a's even columns met b's odd ones
    # a real level difference of 10 errors is still seen as one
    a, b = _dithers(-0.022, level_b=-10 * p["error"])
    moved = pair_difference(a, b)
    assert moved is not None and moved["sigma"] > 8.0, moved
