"""Calibrate stages: jwst Detector1 (`_uncal` -> `_rate`) and Image2 (`_rate` -> `_cal`) per unit.

Pipelines are built the way stpipe's `Step.call` builds them (CRDS `pars-*` references, then the
survey's step overrides), so `get_pars()` afterwards is exactly what ran: jwst itself keeps no
record of the final step parameters (jwst#8246). Each step is wrapped so that its start, end and
wall time are reported: a slow or stuck step is always located. Reading the input (the pipeline's
own open of the exposure) and writing the product are reported the same way, as steps "read" and
"save": they are the stage's work, like the I/O inside Mirage's phases.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dream_hpc.config import PIPELINE_CLASSES
from dream_hpc.core.rundir import atomic_path
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.references.lookup import pipeline_class
from dream_hpc.stages import hot_references
from dream_hpc.stages.contract import StageContext, StageResult, product_path

# dream-hpc pipeline name -> jwst class name (in jwst.pipeline)
# Loggers whose INFO records belong in a unit's log.
JWST_LOGGERS = ("stpipe", "jwst", "stcal")
_validated: set[str] = set()


class CalibrationError(RuntimeError):
    """A pipeline could not run for one unit; the message names the input and the cause."""


def validate_overrides(ctx: StageContext) -> None:
    """Check every configured step parameter against jwst's specs once per process, before compute."""
    if ctx.cfg.sha256 in _validated:
        return
    from dream_hpc.stages.params import validate_step_overrides

    validate_step_overrides(ctx.cfg)
    _validated.add(ctx.cfg.sha256)


def build_pipeline(name: str, input_path: str | Path, overrides: dict[str, dict[str, Any]],
                   output_dir: str | Path, save_results: bool = False, prefetch: bool = True) -> Any:
    """The pipeline as `Step.call` would build it: CRDS pars-* refs <- config overrides.

    `prefetch=False` skips jwst's reference prefetch (see run_pipeline).
    """
    cls = pipeline_class(name)
    config, config_file = cls.build_config(
        str(input_path), steps=copy.deepcopy(overrides), save_results=save_results, output_dir=str(output_dir))
    config.pop("class", None)
    pipe = cls.from_config_section(config, name=config.get("name"), config_file=config_file)
    if not prefetch:  # a class attribute, not a step parameter: get_pars is the same either way
        pipe.prefetch_references = False
    for step_name in pipe.step_defs:
        cores = getattr(getattr(pipe, step_name), "maximum_cores", "none")
        if str(cores).lower() not in ("none", "1"):
            # one exposure per process: a forking step inside an MPI rank is unsafe and was slower
            raise CalibrationError(f"pipeline.{name}.{step_name}.maximum_cores: {cores!r} would fork worker "
                                   "processes inside a rank (set it to 'none' or '1'; run more ranks instead)")
    return pipe


@contextlib.contextmanager
def jwst_logging(level: int = logging.INFO) -> Iterator[None]:
    """Let jwst's INFO records reach the handlers of the current unit log, then restore levels."""
    saved = {}
    for name in JWST_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > level:
            saved[name] = logger.level
            logger.setLevel(level)
    try:
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def timed_step(func: Any, stage: str, step_name: str, ctx: StageContext, times: dict[str, float],
               skipped: Callable[[], bool] = lambda: False) -> Any:
    """`func` wrapped to report start/done/skipped/failed of `step_name` and add its wall time to `times`."""

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if skipped():
            ctx.emit("step", stage=stage, step=step_name, status="skipped")
            times.setdefault(step_name, 0.0)
            return func(*args, **kwargs)
        ctx.emit("step", stage=stage, step=step_name, status="start")
        t0 = time.perf_counter()
        try:
            out = func(*args, **kwargs)
        except BaseException:
            times[step_name] = times.get(step_name, 0.0) + time.perf_counter() - t0
            ctx.emit("step", stage=stage, step=step_name, status="failed")
            raise
        times[step_name] = times.get(step_name, 0.0) + time.perf_counter() - t0
        ctx.emit("step", stage=stage, step=step_name, status="done")
        return out

    return timed


@contextlib.contextmanager
def step_events(pipe: Any, stage: str, ctx: StageContext, times: dict[str, float],
                read_step: bool = False) -> Iterator[None]:
    """Wrap each step of `pipe` so it reports start/done/skipped/failed and its wall time.

    jwst pipelines call `self.<step>.run(...)`; an instance attribute shadows the method, so only
    this pipeline object is affected. Steps that run more than once (gain_scale) add up. With
    `read_step`, the pipeline's own opening of its input (`self.prepare_output(...)`, once, before
    the first step of Detector1 and Image2) is reported as step "read".
    """
    for step_name in pipe.step_defs:
        step = getattr(pipe, step_name)
        step.run = timed_step(step.run, stage, step_name, ctx, times, skipped=lambda step=step: step.skip)
    if read_step:
        pipe.prepare_output = timed_step(pipe.prepare_output, stage, "read", ctx, times)
    try:
        yield
    finally:
        for step_name in pipe.step_defs:
            getattr(pipe, step_name).__dict__.pop("run", None)
        pipe.__dict__.pop("prepare_output", None)


def locate_reference(name: str) -> Path | None:
    """Local path of a `crds://` reference in the configured (read-only) cache."""
    import crds

    try:
        return Path(crds.locate_file(name.removeprefix("crds://"), "jwst"))
    except Exception:  # a name CRDS cannot place (e.g. N/A): nothing to checksum
        return None


def references_used(model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(reftype -> crds name, crds name -> sha256) from the product's R_<TYPE> records, plus the context."""
    from dream_hpc.core.digests import file_sha256

    refs: dict[str, str] = {}
    shas: dict[str, str] = {}
    tree = model.meta.ref_file.instance if model.meta.ref_file else {}
    for reftype, entry in sorted(tree.items()):
        if reftype == "crds":
            refs["crds_context"] = str(entry.get("context_used", ""))
            continue
        name = entry.get("name") if isinstance(entry, dict) else None
        if not name or name.upper() == "N/A":
            continue
        refs[reftype] = name
        path = locate_reference(name)
        if path and path.is_file():
            shas[name] = file_sha256(path)
    return refs, shas


def save_product(model: Any, final: Path) -> None:
    """Write a jwst model to `final` atomically, with meta.filename the final (jwst) name."""
    model.meta.filename = final.name
    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        # a file object: DataModel.on_save would otherwise record the temporary name
        model.to_fits(f)


def settle_heap() -> None:
    """Collect real garbage, then freeze every object alive now out of the cyclic collector's sight.

    stpipe calls gc.collect() before every step. With jwst, Mirage, astropy and the catalog loaded,
    each full collection walks millions of long-lived objects: ~0.5 s per step, more than half of
    Detector1's wall time on a subarray. Frozen objects are still freed by reference counting;
    only cycles among them are never collected, so this runs between stages, when no product of
    the previous one is alive. Objects a pipeline creates stay collectable as usual.
    """
    gc.collect()
    gc.freeze()


def run_pipeline(name: str, input_path: Path, ctx: StageContext, stage: str) -> tuple[Any, dict, dict]:
    """Build and run one pipeline on one input; returns (result, final params, step times)."""
    validate_overrides(ctx)
    settle_heap()
    overrides = getattr(ctx.cfg.pipeline, name)
    times: dict[str, float] = {}
    with jwst_logging():
        # Every reference of every unit was looked up before any compute (survey.check_references)
        # and each step looks up its own: jwst's prefetch would only repeat the CRDS lookups and
        # read the input's metadata once more.
        pipe = build_pipeline(name, input_path, overrides, ctx.run.exposures, prefetch=False)
        params = pipe.get_pars()
        # jwst logs the very same parameters as the run starts: a copy of these, not a second walk
        pipe.get_pars = lambda full_spec=True: copy.deepcopy(params) if full_spec else type(pipe).get_pars(
            pipe, full_spec)
        # references kept hot between units (inside each step's time: they replace its own read)
        with (hot_references.serving(pipe, ctx.cfg.engine.reference_cache_gb),
              step_events(pipe, stage, ctx, times, read_step=True)):
            result = pipe.run(str(input_path))
    return result, params, times


def _check_input(path: Path, unit: WorkUnit, stage: str, previous: str) -> None:
    """Refuse a missing or damaged input with one line naming it and the fix, before jwst starts."""
    if not path.is_file():
        raise CalibrationError(f"{unit.unit_id}: {path.name} not found (run the {previous} stage first)")
    import warnings

    from astropy.io import fits

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # reading every header checks each HDU's data extent against the file size (cheap: no data)
            with fits.open(path, lazy_load_hdus=False) as hdul:
                problem = "" if "SCI" in hdul else "no SCI extension"
        except Exception as e:
            problem = str(e) or type(e).__name__
    notes = sorted({str(w.message).replace("\n", " ") for w in caught
                    if "truncat" in str(w.message).lower() or "corrupt" in str(w.message).lower()})
    if problem or notes:
        why = "; ".join([*notes, problem] if problem else notes)
        raise CalibrationError(f"{unit.unit_id}: {path.name} is not a readable FITS product ({why}); "
                               f"delete it and rerun the {previous} stage")


def _calibrate(unit: WorkUnit, ctx: StageContext, stage: str, pipeline: str, previous: str) -> StageResult:
    from dream_hpc.core.digests import file_sha256

    run = ctx.run
    source = product_path(run, unit, previous)
    final = product_path(run, unit, stage)
    _check_input(source, unit, stage, previous)
    result, params, times = run_pipeline(pipeline, source, ctx, stage)
    if isinstance(result, list | tuple):  # Image2 returns one model per exposure
        if len(result) != 1:
            raise CalibrationError(f"{unit.unit_id}: {pipeline} returned {len(result)} products, expected 1")
        result = result[0]
    try:
        timed_step(save_product, stage, "save", ctx, times)(result, final)
        refs, shas = references_used(result)
    finally:
        result.close()
    # the input was hashed when the previous stage wrote it (in this process, usually): not again
    return StageResult(stage=stage, inputs={run.rel(source): file_sha256(source)},
                       outputs={run.rel(final): file_sha256(final)}, refs=refs, ref_sha256=shas,
                       params=params, step_times=times,
                       extra={"pipeline": PIPELINE_CLASSES[pipeline]})


def detector1_unit(unit: WorkUnit, ctx: StageContext) -> StageResult:
    """jwst Detector1 on the unit's `_uncal` -> `_rate` (countrate image)."""
    result = _calibrate(unit, ctx, "detector1", "detector1", "simulate")
    # how striped the rate image is (1/f noise left after refpix and, if run, clean_flicker_noise)
    from dream_hpc.stages.striping import rate_striping

    result.extra["striping"] = rate_striping(product_path(ctx.run, unit, "detector1"))
    return result


def image2_unit(unit: WorkUnit, ctx: StageContext) -> StageResult:
    """jwst Image2 on the unit's `_rate` -> `_cal` (flat-fielded, flux-calibrated, with WCS)."""
    return _calibrate(unit, ctx, "image2", "image2", "detector1")
