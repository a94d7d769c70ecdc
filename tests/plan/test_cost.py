"""The Image3 cost model (`cost.image3_cost`): its scaling, and that it still reproduces the runs it was fitted to.

The calibration points below are real Image3 runs measured on this 2-core machine with
bench/bench_image3_cost.py (jwst 3.0.0, dream-hpc's own Image3 stage, jwst imported beforehand); they
are stored as data, so this is a regression check of the fit, not a measurement: if the model's
constants change, the new ones must still describe what Image3 really cost. Rerun the bench to
re-measure.
"""

from __future__ import annotations

import pytest

from dream_hpc.plan import cost

FULL = 2048 * 2048
SUB400P = 400 * 400

# (what, inputs, input pixels, mosaic pixels (the i2d's shape), measured CPU s, measured peak RSS MB)
CALIBRATION = [
    ("demo F150W SUB400P", 1, 160_000, 160_800, 2.3, 351),
    ("demo F150W SUB400P", 2, 320_000, 180_994, 4.0, 355),
    ("demo F150W SUB400P", 3, 480_000, 201_810, 4.9, 360),
    ("demo F150W SUB400P", 4, 640_000, 331_035, 5.9, 369),
    ("demo F150W SUB400P", 6, 960_000, 359_310, 8.8, 383),
    ("demo F150W SUB400P", 8, 1_280_000, 645_932, 11.6, 464),
    ("demo F150W SUB400P", 10, 1_600_000, 659_148, 16.8, 458),
    ("demo F150W SUB400P", 12, 1_920_000, 659_946, 21.5, 472),
    ("demo F277W SUB400P", 1, 160_000, 160_800, 2.5, 356),
    ("demo F277W SUB400P", 2, 320_000, 170_560, 4.1, 363),
    ("demo F277W SUB400P", 3, 480_000, 180_576, 5.7, 367),
    ("demo F277W SUB400P", 4, 640_000, 241_186, 7.7, 371),
    ("demo F277W SUB400P", 6, 960_000, 254_562, 12.4, 380),
    ("demo F277W SUB400P", 8, 1_280_000, 358_092, 19.7, 422),
    ("demo F277W SUB400P", 10, 1_600_000, 362_964, 30.4, 425),
    ("demo F277W SUB400P", 12, 1_920_000, 362_964, 42.5, 435),
    ("F150W FULL", 1, 4_194_304, 4_227_135, 12.7, 1099),
    ("F150W FULL", 3, 12_582_912, 4_428_614, 40.4, 1448),
    ("F150W FULL", 6, 25_165_824, 8_333_478, 78.5, 2013),
    ("F277W FULL", 2, 8_388_608, 4_340_916, 29.9, 1327),
    ("F277W FULL", 6, 25_165_824, 6_277_935, 86.1, 1939),
    ("4x4 tiles x 3 dithers F150W SUB400P", 12, 1_920_000, 670_530, 21.8, 476),
    ("4x4 tiles x 3 dithers F150W SUB400P", 24, 3_840_000, 1_229_820, 74.2, 662),
    ("4x4 tiles x 3 dithers F150W SUB400P", 48, 7_680_000, 2_346_855, 234.4, 1273),
    ("8x8 tiles x 2 dithers F150W SUB400P", 64, 10_240_000, 4_436_856, 127.8, 2347),
    ("8x8 tiles x 2 dithers F150W SUB400P", 128, 20_480_000, 8_708_400, 367.5, 6326),
]


@pytest.mark.parametrize(("what", "n", "pix_in", "pix_out", "cpu_s", "rss_mb"), CALIBRATION)
def test_reproduces_the_measured_runs(what, n, pix_in, pix_out, cpu_s, rss_mb):
    c = cost.image3_cost(n, pix_in, pix_out)
    tol = cost.IMG3_FIT_TOLERANCE
    assert 1 / tol <= cpu_s / c.cpu_s <= tol, f"{what}, {n} inputs: measured {cpu_s} CPU-s, model {c.cpu_s:.1f}"
    assert 1 / tol <= rss_mb / c.mem_mb <= tol, f"{what}, {n} inputs: measured {rss_mb} MB, model {c.mem_mb:.0f}"


def test_more_of_anything_never_costs_less():
    base = cost.image3_cost(12, 12 * FULL, 4 * FULL)
    for n, pix_in, pix_out in ((13, 12 * FULL, 4 * FULL), (12, 13 * FULL, 4 * FULL), (12, 12 * FULL, 5 * FULL)):
        more = cost.image3_cost(n, pix_in, pix_out)
        assert more.cpu_s >= base.cpu_s and more.mem_mb >= base.mem_mb
    steps = [cost.image3_cost(n, n * FULL, 0.35 * n * FULL).cpu_s for n in range(1, 200)]
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False))  # including across tweakreg's exact-union limit


def test_same_pixels_in_more_exposures_cost_more():
    """Per-exposure work (source finding, WCS, polygon overlaps) is not only pixels."""
    one = cost.image3_cost(4, 4 * FULL, FULL)
    split = cost.image3_cost(100, 4 * FULL, FULL)  # the same pixels as 100 small subarrays
    assert split.cpu_s > 2 * one.cpu_s


def test_many_inputs_grow_faster_than_linearly():
    """Pairwise footprint overlaps (tweakreg, skymatch) and the median stack (one mosaic-sized layer per
    input) make a survey-sized Image3 superlinear: twice the exposures of the same kind, over twice the
    area, cost more than twice as much."""
    n = 1000
    small = cost.image3_cost(n, n * FULL, 0.35 * n * FULL)
    big = cost.image3_cost(2 * n, 2 * n * FULL, 0.35 * 2 * n * FULL)
    assert big.cpu_s > 2.5 * small.cpu_s and big.mem_mb > 2.5 * small.mem_mb


def test_unknown_mosaic_size_is_estimated_from_the_inputs():
    """engine.image3_seconds passes 0 output pixels: the model then assumes the measured coverage."""
    known = cost.image3_cost(24, 24 * FULL, cost.IMG3_MOSAIC_PER_INPUT_PIXEL * 24 * FULL)
    assert cost.image3_cost(24, 24 * FULL, 0.0) == known


def test_median_stack_memory_is_four_bytes_per_group_and_mosaic_pixel():
    """outlier_detection (in memory, Image3's default) holds a float32 (groups, ny, nx) stack."""
    a = cost.image3_cost(40, 40 * FULL, 1e8, n_groups=10)
    b = cost.image3_cost(40, 40 * FULL, 1e8, n_groups=20)
    assert (b.mem_mb - a.mem_mb) * 2**20 == pytest.approx(10 * 1e8 * 4)


def test_detectors_of_one_exposure_share_a_group():
    """Eight SW detectors per exposure: one median layer and one tweakreg group per exposure, so less
    than eight one-detector exposures of the same pixels; one group per input is the default."""
    n, pix = 800, 800 * FULL
    per_exposure = cost.image3_cost(n, pix, 0.35 * pix, n_groups=n // 8)
    assert per_exposure.cpu_s < cost.image3_cost(n, pix, 0.35 * pix).cpu_s
    assert per_exposure.mem_mb < cost.image3_cost(n, pix, 0.35 * pix).mem_mb
    assert cost.image3_cost(n, pix, 0.35 * pix, n_groups=n) == cost.image3_cost(n, pix, 0.35 * pix)
