"""The real stage set: Mirage and the jwst pipeline, as the engine's worker runs them (see contract.py)."""

from __future__ import annotations

import importlib

from dream_hpc.config import SurveyConfig
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.workunit import STAGES, WorkUnit
from dream_hpc.stages.contract import StageContext, StageResult

# stage -> (module, function); the function has the signature of `run_stage`
_IMPLEMENTATIONS = {
    "simulate": ("dream_hpc.stages.simulate", "simulate_unit"),
    "detector1": ("dream_hpc.stages.calibrate", "detector1_unit"),
    "image2": ("dream_hpc.stages.calibrate", "image2_unit"),
}


def run_stage(stage: str, unit: WorkUnit, ctx: StageContext) -> StageResult:
    """Run one stage of one unit; raises on failure (the engine records where and why)."""
    if stage not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    module, func = _IMPLEMENTATIONS[stage]
    return getattr(importlib.import_module(module), func)(unit, ctx)


def run_mosaic(filter_: str, units: list[WorkUnit], ctx: StageContext) -> StageResult:
    """Image3 over one filter's `_cal` files (stages/image3.py)."""
    from dream_hpc.stages.image3 import run_mosaic as image3

    return image3(filter_, units, ctx)


def run_mosaic_task(spec: dict, units: list[WorkUnit], ctx: StageContext) -> StageResult:
    """One task of a tiled mosaic: astrometry, outliers, tile or merge (stages/tiles.py)."""
    from dream_hpc.stages.tiles import run_phase

    return run_phase(spec, units, ctx)


def preload() -> None:
    """Import jwst, the stage modules and Mirage once per worker, so units pay no import time."""
    import jwst.pipeline  # noqa: F401

    from dream_hpc.stages import calibrate, image3, tile_merge, tiles  # noqa: F401
    from dream_hpc.stages.simulate import import_mirage

    # Mirage through its guard only: a plain import runs its logging.config.dictConfig, which
    # disables jwst's loggers (their records would vanish from the unit logs) and opens
    # mirage_latest.log in the working directory.
    import_mirage()


def check_before_compute(cfg: SurveyConfig, run: RunDir) -> None:
    """Once per worker, with jwst imported: a bad step override or a reference missing from this
    node's CRDS cache stops the run before any compute, in one line."""
    from dream_hpc.plan.summary import load_plan
    from dream_hpc.stages.params import validate_step_overrides
    from dream_hpc.stages.preflight import check_references

    validate_step_overrides(cfg)
    check_references(cfg, load_plan(run.plan))


def describe_failure(cfg: SurveyConfig, unit: WorkUnit, stage: str, step: str | None) -> str:
    """For a failed jwst step: the reference files it used and whether each verifies."""
    from dream_hpc.stages.preflight import describe_step_references

    return describe_step_references(cfg, unit, stage, step)
