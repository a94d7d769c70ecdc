"""The Mirage yaml dream-hpc writes per unit (stages/mirage_inputs.py): what Mirage is told about the sky."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dream_hpc.config import SurveyConfig
from dream_hpc.plan.pointings import make_plan
from dream_hpc.stages import zodiacal
from dream_hpc.stages.contract import StageContext
from dream_hpc.stages.mirage_inputs import mirage_params


def _params(tmp_path: Path, **simulation: Any) -> list[dict[str, Any]]:
    cfg = SurveyConfig()
    for key, value in simulation.items():
        setattr(cfg.simulation, key, value)
    kit = {name: tmp_path / name for name in ("linearized_darkfile", "psfpath", "cosmic_ray_path", "pixelflat")}
    ctx = StageContext(cfg=cfg, run=None)  # type: ignore[arg-type]  (mirage_params reads only cfg)
    units = [u.with_seeds(cfg.survey.seed) for u in make_plan(cfg)]
    return [mirage_params(u, ctx, {}, kit, {}, tmp_path) for u in units]


def test_each_filter_gets_its_own_zodiacal_level(tmp_path: Path) -> None:
    params = _params(tmp_path)
    rates = {p["Readout"]["filter"]: p["simSignals"]["bkgdrate"] for p in params}
    assert len(set(rates.values())) == len(rates) >= 2  # not one number for every filter
    p = params[0]
    expected = zodiacal.for_unit(p["Telescope"]["ra"], p["Telescope"]["dec"], p["Output"]["date_obs"],
                                 p["Output"]["time_obs"], p["Readout"]["array_name"].split("_")[0],
                                 p["Readout"]["filter"]).adu_s
    assert p["simSignals"]["bkgdrate"] == pytest.approx(expected)
    assert {q["simSignals"]["bkgdrate"] for q in _params(tmp_path, background_rate=0.2)} == {0.2}


def test_no_cosmic_rays_is_the_library_at_scale_zero(tmp_path: Path) -> None:
    """Mirage checks the library path exists even when told "None" (it then fails): give it the path, rate 0."""
    off = _params(tmp_path, cosmic_rays=False)[0]["cosmicRay"]
    assert off["path"] == str(tmp_path / "cosmic_ray_path") and off["scale"] == 0.0
    on = _params(tmp_path, cosmic_rays=True, cosmic_ray_scale=1.5)[0]["cosmicRay"]
    assert on["scale"] == 1.5
