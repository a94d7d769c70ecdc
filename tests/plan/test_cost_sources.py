"""The Image3 cost model's source term (`cost.tweakreg_sources`, plan/overlaps.py): what more sources per input cost.

The points are real Image3 runs measured with bench/bench_image3_cost.py on this machine (jwst 3.0.0,
dream-hpc's Image3 stage, the runs' own prepared catalogs so tweakreg also fits the abs_refcat), stored
as data: tests/data/small_survey.yaml (SUB400P: a long-wave input covers 4.1x the sky of a short-wave one
and holds ~4x the sources) and config/demo.yaml (FULL: both capped at tweakreg's `brightest`, 600).
Fast: the model, the plans of the two surveys and footprint overlaps (checked against spherical_geometry,
the library tweakreg and skymatch test them with).
"""

from __future__ import annotations

import pytest
from _chain_fixtures import ROOT

from dream_hpc.config import load_config
from dream_hpc.engine.tasks import mosaic_tails
from dream_hpc.plan import cost
from dream_hpc.plan.overlaps import group_key, overlapping_pairs
from dream_hpc.plan.pointings import make_plan
from dream_hpc.plan.summary import summarize

# (survey, filter, channel, brightest, inputs, input pixels, mosaic pixels, measured CPU s)
MEASURED = [
    ("small_survey", "F150W", "SHORT", 100, 2, 320_000, 180_576, 3.8),
    ("small_survey", "F150W", "SHORT", 100, 4, 640_000, 295_988, 5.6),
    ("small_survey", "F150W", "SHORT", 100, 8, 1_280_000, 525_141, 12.7),
    ("small_survey", "F150W", "SHORT", 100, 12, 1_920_000, 537_093, 28.0),
    ("small_survey", "F277W", "LONG", 100, 2, 320_000, 170_976, 3.6),
    ("small_survey", "F277W", "LONG", 100, 4, 640_000, 225_302, 6.6),
    ("small_survey", "F277W", "LONG", 100, 8, 1_280_000, 313_500, 19.0),
    ("small_survey", "F277W", "LONG", 100, 12, 1_920_000, 318_060, 41.3),
    ("demo", "F150W", "SHORT", 600, 2, 8_388_608, 4_330_480, 30.4),
    ("demo", "F150W", "SHORT", 600, 4, 16_777_216, 7_337_418, 58.6),
    ("demo", "F277W", "LONG", 600, 2, 8_388_608, 4_340_916, 27.7),
    ("demo", "F277W", "LONG", 600, 4, 16_777_216, 5_805_215, 55.2),
]


@pytest.mark.parametrize(("survey", "filt", "channel", "brightest", "n", "pix_in", "pix_out", "cpu_s"), MEASURED)
def test_reproduces_the_measured_runs(survey, filt, channel, brightest, n, pix_in, pix_out, cpu_s) -> None:
    sources = cost.tweakreg_sources(pix_in / n, channel, brightest)
    model = cost.image3_cost(n, pix_in, pix_out, sources_per_input=sources).cpu_s
    tol = cost.IMG3_FIT_TOLERANCE
    assert 1 / tol <= cpu_s / model <= tol, f"{survey} {filt} N={n}: measured {cpu_s} CPU-s, model {model:.1f}"


def test_long_wave_costs_more_where_its_sources_are_not_capped() -> None:
    """SUB400P: 12 LW inputs measured 1.47x the SW ones with the same pixels; the model must order them so
    (the scheduler starts the longest mosaic first) and get the gap's size roughly right. FULL: both
    filters keep `brightest` sources per input and measured within 1% of each other: the model too."""
    small = mosaic_tails(make_plan(load_config(ROOT / "tests" / "data" / "small_survey.yaml")))
    assert small["F277W"] > 1.25 * small["F150W"], small
    full = mosaic_tails(make_plan(load_config(ROOT / "config" / "demo.yaml")))
    assert abs(full["F277W"] / full["F150W"] - 1.0) < 0.05, full
    assert cost.tweakreg_sources(2048 * 2048, "SHORT") == cost.tweakreg_sources(2048 * 2048, "LONG") == 200
    # the plan summary reads the config's `brightest` (demo: 600) and still sees no difference
    cfg = load_config(ROOT / "config" / "demo.yaml")
    image3 = summarize(cfg, make_plan(cfg))["image3"]
    assert abs(image3["F277W"]["cpu_s"] / image3["F150W"]["cpu_s"] - 1.0) < 0.05, image3


def test_more_sources_never_cost_less() -> None:
    costs = [cost.image3_cost(12, 12 * 160_000, 0.0, sources_per_input=s).cpu_s for s in (5, 22, 50, 100, 600)]
    assert costs[0] == costs[1] < costs[2] < costs[3] < costs[4]
    # only overlapping footprints pay for the sources: none overlapping, no source term
    assert cost.image3_cost(12, 12 * 160_000, 0.0, sources_per_input=600, overlapping_pairs=0).cpu_s == costs[1]


def test_overlapping_pairs_agree_with_spherical_geometry() -> None:
    from spherical_geometry.polygon import SphericalPolygon

    from dream_hpc.plan.grid import unit_corners

    units = [u for u in make_plan(load_config(ROOT / "config" / "cosmos-web.yaml")) if u.filter == "F277W"]
    units = sorted(units, key=lambda u: u.unit_id)[:90]  # a few neighbouring visits: overlapping and not
    polys = [SphericalPolygon.from_radec(*unit_corners(u), degrees=True) for u in units]
    want = sum(1 for i in range(len(units)) for j in range(i + 1, len(units))
               if group_key(units[i]) != group_key(units[j]) and polys[i].intersects_poly(polys[j]))
    assert 0 < want < len(units) * (len(units) - 1) / 2
    assert overlapping_pairs(units) == want
