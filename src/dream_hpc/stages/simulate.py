"""Simulate stage: one work unit -> Mirage yaml -> Mirage (in process) -> `<unit>_uncal.fits`.

Every reference Mirage reads is resolved here from the pinned CRDS context at the exposure's own
observation date (the same files Detector1/Image2 will use) and written into the yaml as a full
path: a Reffiles key left out silently becomes `crds`, and a failed lookup inside Mirage calls
`sys.exit(-1)`. MIRAGE_DATA files (linearized dark, PSF library, cosmic rays, QE flat) come from
the kit. Mirage's dark_prep product depends only on the dark and the readout, so it is made once
per run and reused (bit-identical pixels either way; see `dark_cache_path`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dream_hpc.core.digests import file_sha256
from dream_hpc.core.rundir import atomic_path, atomic_write_text
from dream_hpc.core.workunit import WorkUnit, derive_seed
from dream_hpc.stages import pointing_error, truth_products
from dream_hpc.stages.contract import StageContext, StageResult, product_path
from dream_hpc.stages.mirage_inputs import (
    MIRAGE_REFTYPES,
    SimulationError,
    _prepare_dark,
    background_truth,
    dark_cache_path,
    mirage_params,
    mirage_references,
)

STAGE = "simulate"
# Mirage's phases, in order, as reported in step events.
PHASES = ("seed", "dark_prep", "obs_generator")




# --- Mirage import and logging ---------------------------------------------------------------
@functools.cache
def import_mirage() -> Any:
    """Import Mirage's ImgSim without letting it reconfigure logging.

    Every Mirage module calls `logging.config.dictConfig` at import: that replaces the root
    handlers, disables every logger created before (stpipe's, ours) and opens `mirage_latest.log`
    in the current directory (mode 'w', so parallel runs clobber each other). ImgSim.create()
    then copies that file next to the output. Both are made no-ops; `mirage_log` below gives
    each unit its own log file instead.
    """
    from mirage.logging import logging_functions

    logging_functions.create_logger = lambda *args, **kwargs: None
    logging_functions.move_logfile_to_standard_location = lambda *args, **kwargs: None
    from mirage.imaging_simulator import ImgSim
    from mirage.utils import set_telescope_pointing_separated as pointing

    # this module adds its own stderr handler at import: its records reach the unit log anyway
    for handler in list(pointing.logger.handlers):
        pointing.logger.removeHandler(handler)
    return ImgSim


@contextlib.contextmanager
def mirage_log(path: Path) -> Iterator[None]:
    """Send Mirage's log records, prints and warnings to `path` for the duration of the block.

    Mirage also prints to stdout and raises schema warnings; on a terminal they would bury the
    survey's progress display, so they go to the unit's Mirage log with everything else.
    """
    logger = logging.getLogger("mirage")
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    handler.setLevel(logging.INFO)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    def log_warning(message: Any, category: type, filename: str, lineno: int, *args: Any) -> None:
        logger.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)

    try:
        with (warnings.catch_warnings(), open(path.with_suffix(".stdout"), "w") as out,
              contextlib.redirect_stdout(out)):
            warnings.showwarning = log_warning
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


@contextlib.contextmanager
def phase_events(emit: Any, times: dict[str, float], current: list[str],
                 numpy_seed: int | None = None) -> Iterator[None]:
    """Report Mirage's three phases as step events and time them.

    ImgSim.create() runs Catalog_seed.make_seed, DarkPrep.prepare and Observation.create in turn;
    each is wrapped for the duration of the block (one process runs one unit at a time). With
    `numpy_seed`, numpy's global generator is seeded before each phase: Mirage draws from it
    unseeded, and a phase's pixels must not depend on whether an earlier one ran (dark_prep is
    skipped when its product is cached).
    """
    import numpy as np
    from mirage.dark import dark_prep
    from mirage.ramp_generator import obs_generator
    from mirage.seed_image import catalog_seed_image

    targets = [("seed", catalog_seed_image.Catalog_seed, "make_seed"),
               ("dark_prep", dark_prep.DarkPrep, "prepare"),
               ("obs_generator", obs_generator.Observation, "create")]
    originals = [(cls, name, cls.__dict__[name]) for _, cls, name in targets]

    def wrap(phase: str, method: Any) -> Any:
        @functools.wraps(method)
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            current[0] = phase
            if numpy_seed is not None:
                np.random.seed((numpy_seed + PHASES.index(phase)) % 2**32)
            emit("step", stage=STAGE, step=phase, status="start")
            t0 = time.perf_counter()
            try:
                out = method(self, *args, **kwargs)
            except BaseException:
                times[phase] = time.perf_counter() - t0
                emit("step", stage=STAGE, step=phase, status="failed")
                raise
            times[phase] = time.perf_counter() - t0
            emit("step", stage=STAGE, step=phase, status="done")
            return out

        return timed

    for phase, cls, name in targets:
        setattr(cls, name, wrap(phase, cls.__dict__[name]))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def _emit_to(stream: Any, emit: Any) -> Any:
    def emit_outside(kind: str, **data: Any) -> None:
        with contextlib.redirect_stdout(stream):
            emit(kind, **data)

    return emit_outside


def _count_rows(path: Path | None) -> int:
    """Sources in a Mirage ascii catalog (0 when there is none)."""
    if not path:
        return 0
    from astropy.io import ascii

    # the layout write_mirage_catalogs writes: '#' comments, a header line, one row per source
    return len(ascii.read(path, format="basic", guess=False))


def _under(path: Path, root: Path) -> str:
    """`path` relative to `root` (compared as given: a kit may be a tree of symlinks)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(root)))
    except ValueError:
        return str(path)


def _rel(run: Any, path: Path) -> str:
    """`path` relative to RUN when inside it, else absolute."""
    try:
        return run.rel(path)
    except ValueError:
        return str(Path(path).resolve())


# --- the stage -------------------------------------------------------------------------------
def simulate_unit(unit: WorkUnit, ctx: StageContext) -> StageResult:
    """Write the Mirage inputs for `unit`, run Mirage in process, leave `<unit>_uncal.fits`."""
    from dream_hpc import refkit
    from dream_hpc.catalog import prepared
    from dream_hpc.catalog.selection import select_for_unit, write_mirage_catalogs

    cfg, run = ctx.cfg, ctx.run
    if not unit.seeds:
        unit.with_seeds(cfg.survey.seed)
    inputs_dir = run.unit_inputs(unit.unit_id)
    inputs_dir.mkdir(parents=True, exist_ok=True)

    # sources that fall on this detector (with a margin for PSF wings), read from the prepared
    # catalog through its cell index: a rank never holds the whole catalog
    sources = select_for_unit(prepared.for_run(cfg, run.root, [unit]), unit, cfg.catalog.margin_arcsec)
    # the true pointing: Mirage keeps the nominal one (headers) and draws the sky moved by the error
    error = pointing_error.draw(cfg, unit)
    catalogs = write_mirage_catalogs(pointing_error.rendered_sources(error, unit, sources), unit, inputs_dir)
    truth = truth_products.write_exposure_truth(run, unit, error, sources)

    refs = mirage_references(unit)
    mirage_data = cfg.resolve(cfg.references.mirage_data)
    # one of the kit's dark realizations, chosen by the unit's seed (not the rank or the order)
    dark_choice = derive_seed(cfg.survey.seed, unit.unit_id, "dark_realization")
    kit = {k: Path(v) for k, v in refkit.mirage_paths(mirage_data, unit.detector, unit.filter, unit.readpatt,
                                                       unit.ngroups, dark_choice).items()}

    final = product_path(run, unit, STAGE)
    tmp_out = Path(tempfile.mkdtemp(prefix=f".tmp-{unit.unit_id}-mirage.", dir=run.exposures))
    try:
        params = mirage_params(unit, ctx, refs, kit, catalogs, tmp_out)
        yaml_path = inputs_dir / f"{unit.unit_id}_mirage.yaml"
        atomic_write_text(yaml_path, yaml.safe_dump(params, sort_keys=False))

        ImgSim = import_mirage()  # noqa: N806 (Mirage's class name)
        times: dict[str, float] = {}
        current = ["setup"]
        emit = _emit_to(sys.stdout, ctx.emit)  # progress stays on the terminal while Mirage's prints do not
        cached_dark = dark_cache_path(run, unit, kit["linearized_darkfile"])
        dark_state = "cached" if cached_dark and cached_dark.is_file() else "ran"
        if dark_state == "cached":
            emit("step", stage=STAGE, step="dark_prep", status="cached")
        # Mirage draws from numpy's unseeded global generator (dark_prep's choice of darks, ...):
        # each phase gets it seeded from the unit's seed
        with (mirage_log(inputs_dir / f"{unit.unit_id}_mirage.log"),
              phase_events(emit, times, current, unit.seeds["numpy"])):
            try:
                if cached_dark and dark_state == "ran":
                    # prepare the dark on its own and cache it, so this unit reads it back exactly as
                    # the units that reuse it will: the pixels never depend on the cache's state
                    _prepare_dark(yaml_path, tmp_out, unit, cached_dark)
                override = str(cached_dark) if cached_dark else None
                ImgSim(paramfile=str(yaml_path), override_dark=override, offline=True).create()
            except SystemExit as e:
                raise SimulationError(
                    f"{unit.unit_id}: Mirage exited (code {e.code}) during {current[0]}; the likely cause is a "
                    "reference lookup through CRDS (a Reffiles entry that is not a full path) or a missing "
                    f"MIRAGE_DATA file; see {run.rel(inputs_dir / (unit.unit_id + '_mirage.log'))}") from None
        produced = tmp_out / unit.filename("uncal")
        if not produced.is_file():
            raise SimulationError(f"{unit.unit_id}: Mirage finished but wrote no {produced.name} "
                                  f"(see {run.rel(inputs_dir / (unit.unit_id + '_mirage.log'))})")
        with atomic_path(final) as tmp:
            os.replace(produced, tmp)
    finally:
        shutil.rmtree(tmp_out, ignore_errors=True)

    result = StageResult(stage=STAGE, params=params, seeds=dict(unit.seeds), step_times=times)
    for path in [*catalogs.values(), yaml_path, cached_dark]:
        if path:
            result.inputs[_rel(run, Path(path))] = file_sha256(path)
    result.outputs[run.rel(final)] = file_sha256(final)
    for path in truth.values():
        result.outputs[run.rel(path)] = file_sha256(path)
    for key, path in refs.items():
        name = f"crds://{path.name}"
        result.refs[MIRAGE_REFTYPES[key]] = name
        result.ref_sha256[name] = file_sha256(path)
    # MIRAGE_DATA files by kit key; directories (PSF library, cosmic rays) by the files Mirage can pick
    for key, path in sorted(kit.items()):
        if key == "cosmic_ray_path" and not cfg.simulation.cosmic_rays:
            continue
        if key == "psfpath":
            files = sorted(path.glob(f"nircam_{unit.detector.lower()}_{unit.filter.lower()}_*.fits"))
        elif key == "cosmic_ray_path":
            cosmic = params["cosmicRay"]
            files = sorted(path.glob(f"CRs_*_{cosmic['library']}_*_{cosmic['suffix']}.fits"))
        else:
            files = [path]
        for f in files:
            name = f"mirage_data://{_under(f, mirage_data)}"
            result.refs[f"mirage_{key}" + (f"[{f.name}]" if len(files) > 1 else "")] = name
            result.ref_sha256[name] = file_sha256(f)
    result.extra = {"n_stars": _count_rows(catalogs.get("pointsource")),
                    "n_galaxies": _count_rows(catalogs.get("galaxyListFile")),
                    "aperture": unit.aperture, "filter": unit.filter, "pupil": unit.pupil,
                    "dark_prep": dark_state,
                    "dark_prep_product": _rel(run, cached_dark) if cached_dark else None,
                    "pointing_truth": pointing_error.truth_record(error, unit),
                    "background_truth": background_truth(cfg, unit),
                    "truth": {k: run.rel(v) for k, v in truth.items()}}
    return result
