"""A tiled mosaic's alignment status from its per-visit astrometry records (stages/tile_alignment.py):
"fitted" only when every exposure group's frozen WCS is usable; otherwise the groups are named."""

from __future__ import annotations

import pytest
from _chain_fixtures import DEMO

from dream_hpc.config import load_config
from dream_hpc.core.runstate import MosaicState
from dream_hpc.plan.grid import visit_id as visit_key
from dream_hpc.plan.pointings import make_plan
from dream_hpc.stages import alignment_status, tile_alignment
from dream_hpc.stages.pointing_error import exposure_key

FILTER = "F150W"
MAX_RMSE = 0.015


@pytest.fixture(scope="module")
def units():
    return [u for u in make_plan(load_config(DEMO)) if u.filter == FILTER]


def good_fit(n: int = 25, rmse: float = 0.003) -> dict:
    return {"status": "COMPLETE", "relative": {"status": "SUCCESS", "n_matches": 30},
            "absolute": {"status": "SUCCESS", "n_matches": n, "rmse_arcsec": rmse}}


def tasks_for(units, fit_of=lambda u: good_fit(), failed_visits=()) -> dict:
    out = {}
    for v in sorted({visit_key(u) for u in units}):
        label = f"{FILTER}/astrometry/{v}"
        if v in failed_visits:
            out[label] = MosaicState(label, "failed", error=f"{FILTER} {v}: frozen WCS not usable for 3 exposure(s)")
            continue
        frozen = {u.unit_id: fit_of(u) for u in units if visit_key(u) == v}
        out[label] = MosaicState(label, "done", data={"extra": {"phase": "astrometry", "frozen_wcs": frozen}})
    return out


def test_every_group_fitted(units) -> None:
    a = tile_alignment.from_tasks(tasks_for(units), FILTER, units, 5, MAX_RMSE)
    assert a["status"] == "fitted" and not a["unaligned_groups"]
    assert {g["group"] for g in a["groups"]} == {exposure_key(u) for u in units}
    assert a["absolute"]["status"] == "fitted" and a["absolute"]["matches"] == 25
    assert alignment_status.one_line(a).startswith("fitted:")


def test_one_detector_with_too_few_matches_makes_its_exposure_unaligned(units) -> None:
    bad = units[0]
    a = tile_alignment.from_tasks(tasks_for(units, lambda u: good_fit(3) if u is bad else good_fit()),
                                  FILTER, units, 5, MAX_RMSE)
    assert a["status"] == "partial" and a["unaligned_groups"] == [exposure_key(bad)]
    g = next(g for g in a["groups"] if g["group"] == exposure_key(bad))
    assert not g["aligned"] and "3 stars < mosaic.min_matches=5" in g["reason"]


def test_a_mismatched_fit_and_a_failed_visit_are_named(units) -> None:
    visits = sorted({visit_key(u) for u in units})
    lost = visits[-1]
    wild = next(u for u in units if visit_key(u) != lost)
    a = tile_alignment.from_tasks(
        tasks_for(units, lambda u: good_fit(rmse=0.2) if u is wild else good_fit(), failed_visits=[lost]),
        FILTER, units, 5, MAX_RMSE)
    assert a["status"] == "partial"
    expected = {exposure_key(wild)} | {exposure_key(u) for u in units if visit_key(u) == lost}
    assert set(a["unaligned_groups"]) == expected
    reasons = {g["group"]: g["reason"] for g in a["groups"]}
    assert "mismatched" in reasons[exposure_key(wild)]
    assert all("frozen WCS not usable" in reasons[exposure_key(u)] for u in units if visit_key(u) == lost)


def test_no_astrometry_at_all_is_not_fitted(units) -> None:
    a = tile_alignment.from_tasks({}, FILTER, units, 5, MAX_RMSE)
    assert a["status"] == "not fitted" and a["absolute"]["status"] == "not attempted"
