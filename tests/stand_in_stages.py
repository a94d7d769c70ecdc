"""A stand-in stage set for the engine's fast tests: the contract of stages/contract.py, no Mirage, no jwst.

Each stage writes a small product derived from its input (so checksums, resume and chaining are real)
and returns a StageResult. STAND_IN_DIE=<unit id>[,...] kills the worker process in that unit's
detector1 (as the OOM killer would); the engine's own fault hook (DREAM_HPC_TEST_FAULT) covers raise,
hang and truncate inside a stage.
"""

from __future__ import annotations

import hashlib
import os
import signal
from typing import Any

from dream_hpc.core.digests import sha256_file
from dream_hpc.core.rundir import atomic_write_text
from dream_hpc.core.workunit import PRODUCT_SUFFIX, STAGES
from dream_hpc.stages.contract import StageResult, product_path

PREVIOUS = {"detector1": "simulate", "image2": "detector1"}


def preload() -> None:
    """Nothing to import: the real chain's jwst/Mirage imports are what this stand-in avoids."""


def check_before_compute(cfg: Any, run: Any) -> None:
    if os.environ.get("STAND_IN_REFUSE"):
        raise ValueError(f"stand-in refuses: {os.environ['STAND_IN_REFUSE']}")


def run_stage(stage: str, unit: Any, ctx: Any) -> StageResult:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if stage == "detector1" and unit.unit_id in os.environ.get("STAND_IN_DIE", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    ctx.emit("step", stage=stage, step=f"{stage}_work", status="start")
    inputs = {}
    seed = unit.unit_id
    if stage in PREVIOUS:
        src = product_path(ctx.run, unit, PREVIOUS[stage])
        inputs[ctx.run.rel(src)] = sha256_file(src)
        seed = src.read_text()
    out = product_path(ctx.run, unit, stage)
    atomic_write_text(out, hashlib.sha256(f"{stage}:{seed}".encode()).hexdigest() + "\n")
    ctx.emit("step", stage=stage, step=f"{stage}_work", status="done")
    return StageResult(stage=stage, inputs=inputs, outputs={ctx.run.rel(out): sha256_file(out)},
                       seeds={"numpy": 1}, extra={"suffix": PRODUCT_SUFFIX[stage]})


def run_mosaic(filter_: str, units: list[Any], ctx: Any) -> StageResult:
    cals = sorted(product_path(ctx.run, u, "image2") for u in units)
    out = ctx.run.mosaic / f"{filter_.lower()}_i2d.txt"
    atomic_write_text(out, "".join(p.read_text() for p in cals))
    return StageResult(stage="image3", inputs={ctx.run.rel(p): sha256_file(p) for p in cals},
                       outputs={ctx.run.rel(out): sha256_file(out)})
