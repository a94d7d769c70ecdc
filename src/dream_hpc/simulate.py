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

from dream_hpc.rundir import atomic_path, atomic_write_text, sha256_file
from dream_hpc.stages import StageContext, StageResult, product_path
from dream_hpc.workunit import WorkUnit

STAGE = "simulate"
# Mirage Reffiles key -> CRDS reftype. These are the references Mirage reads (mask, gain, linearity,
# saturation, superbias shape the ramp; distortion places the sources; photom converts extended-
# source surface brightness; area is recorded in the header). Mirage's `pixelflat` is the kit's QE
# flat from MIRAGE_DATA: the CRDS flat also carries the pixel area, which Mirage must not apply.
MIRAGE_REFTYPES = {
    "badpixmask": "mask",
    "astrometric": "distortion",
    "gain": "gain",
    "linearity": "linearity",
    "saturation": "saturation",
    "superbias": "superbias",
    "photom": "photom",
    "pixelAreaMap": "area",
}
# Mirage's phases, in order, as reported in step events.
PHASES = ("seed", "dark_prep", "obs_generator")


class SimulationError(RuntimeError):
    """Mirage failed for one unit; the message names the phase and the likely cause."""


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


# --- digests ----------------------------------------------------------------------------------
# References at least this big are hashed once per machine, not once per process: runinfo's digest cache
# keeps them by path, size, mtime and inode. A worker otherwise read ~1.2 GB of references per
# detector before its first unit could finish (the kit's linearized darks are ~0.8 GB each).
PERSISTENT_DIGEST_BYTES = 8 << 20


def _stat_key(path: Path) -> tuple[str, int, int, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _reference_root(path: str) -> bool:
    """Under the CRDS cache or MIRAGE_DATA (read-only references), not a run's products: a machine-wide
    digest file rewritten for each of a survey's thousands of products would cost more than it saves."""
    roots = (os.environ.get("CRDS_PATH"), os.environ.get("MIRAGE_DATA"))
    return any(root and path.startswith(str(Path(root).resolve()) + os.sep) for root in roots)


@functools.lru_cache(maxsize=1024)
def _sha256_cached(key: tuple[str, int, int, int, int]) -> str:
    if key[1] >= PERSISTENT_DIGEST_BYTES and _reference_root(key[0]):
        from dream_hpc.runinfo import cached_sha256

        return cached_sha256(key[0])
    return sha256_file(key[0])


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per process per file version (path, size, mtime, ctime, inode).

    A product is hashed once when its stage writes it; the next stage, in the same process, records
    it as its input without reading it again. A product replaced or truncated is a new version.
    """
    return _sha256_cached(_stat_key(Path(path)))


# --- references ------------------------------------------------------------------------------
def mirage_references(unit: WorkUnit) -> dict[str, Path]:
    """Mirage Reffiles key -> reference file, from the pinned context at the unit's own date."""
    from dream_hpc import cache

    found = cache.best_references(unit, sorted(set(MIRAGE_REFTYPES.values())))
    refs: dict[str, Path] = {}
    for key, reftype in MIRAGE_REFTYPES.items():
        path = found.get(reftype)
        if path is None or not Path(path).is_file():
            raise SimulationError(f"{unit.unit_id}: no {reftype} reference for {unit.detector} {unit.filter} on "
                                  f"{unit.date_obs} in the CRDS cache (Mirage needs it as '{key}'; rebuild the "
                                  "reference kit with `make kit`)")
        refs[key] = Path(path)
    return refs


@functools.cache
def _num_amps(aperture: str) -> int:
    """Amplifiers used to read out `aperture`, from Mirage's own subarray definitions."""
    import mirage

    table = Path(mirage.__file__).parent / "config" / "NIRCam_subarray_definitions.list"
    for line in table.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == aperture:
            return int(parts[-1])
    raise SimulationError(f"{aperture}: aperture not in Mirage's subarray definitions ({table.name}); "
                          "choose another instrument.subarray")


# --- dark_prep cache ------------------------------------------------------------------------
def dark_cache_path(run: Any, unit: WorkUnit, dark: Path) -> Path | None:
    """Where this unit's dark_prep product is cached in the run, or None when it cannot be reused.

    dark_prep only averages the kit's linearized dark into the unit's groups and cuts its subarray:
    the same for every unit with the same dark, detector, subarray and readout. With several dark
    files beside the named one it would pick some at random per integration: not reused then.
    """
    if len(list(dark.parent.glob("*.fits"))) != 1:
        return None
    key = (f"{unit.detector.lower()}_{unit.subarray.lower()}_{unit.readpatt.lower()}_g{unit.ngroups}_i{unit.nints}_"
           f"{file_sha256(dark)[:12]}")
    return run.inside(Path("inputs") / "mirage_darks" / f"{key}_linear_dark_prep_object.fits")


def _prepare_dark(yaml_path: Path, outdir: Path, unit: WorkUnit, cached: Path) -> None:
    """Run Mirage's dark_prep alone and move its product into the run's dark cache."""
    from mirage.dark import dark_prep

    prep = dark_prep.DarkPrep(offline=True)
    prep.paramfile = str(yaml_path)
    prep.prepare()
    produced = outdir / f"{Path(unit.filename('uncal')).stem}_linear_dark_prep_object.fits"
    if not produced.is_file():
        raise SimulationError(f"{unit.unit_id}: Mirage's dark_prep wrote no {produced.name}")
    with atomic_path(cached) as tmp:  # concurrent ranks may race: both write the same content
        os.replace(produced, tmp)


# --- the Mirage yaml -------------------------------------------------------------------------
def mirage_params(unit: WorkUnit, ctx: StageContext, refs: dict[str, Path], kit: dict[str, Path],
                  catalogs: dict[str, Path | None], outdir: Path) -> dict[str, Any]:
    """The complete Mirage yaml for `unit` as a dict: every path absolute, every id quoted.

    `kit` holds the MIRAGE_DATA files from `refkit.mirage_paths` (linearized_darkfile, psfpath,
    cosmic_ray_path, pixelflat).
    """
    from dream_hpc import refkit

    cfg = ctx.cfg
    sim = cfg.simulation
    none = "None"
    reffiles: dict[str, Any] = {
        "dark": none,  # the linearized dark below is used instead (no raw dark, no CRDS)
        "linearized_darkfile": str(kit["linearized_darkfile"]),
        **{key: str(path) for key, path in refs.items()},
        "pixelflat": str(kit["pixelflat"]),
        "illumflat": none, "ipc": none, "invertIPC": False, "occult": none, "transmission": none,
        # Mirage's own instrument tables (shipped inside the mirage package)
        "subarray_defs": "config", "readpattdefs": "config", "crosstalk": "config",
        "filtpupilcombo": "config", "filter_wheel_positions": "config", "flux_cal": "config",
        "filter_throughput": "config",
    }
    cosmic = {"path": str(kit["cosmic_ray_path"]) if sim.cosmic_rays else none,  # None: no cosmic rays
              "library": sim.cosmic_ray_library, "scale": sim.cosmic_ray_scale,
              "suffix": refkit.cosmic_ray_suffix(unit.detector), "seed": unit.seeds["cosmic_ray"]}
    s = cfg.survey
    return {
        "Inst": {"instrument": "NIRCam", "mode": "imaging", "use_JWST_pipeline": True},
        "Readout": {
            "readpatt": unit.readpatt, "ngroup": unit.ngroups, "nint": unit.nints,
            "namp": _num_amps(unit.aperture), "resets_bet_ints": 1, "array_name": unit.aperture,
            "intermediate_aperture": none, "PPS_aperture": unit.aperture,
            "filter": unit.filter, "pupil": unit.pupil,
        },
        "Reffiles": reffiles,
        "nonlin": {"limit": 60000.0, "accuracy": 0.000001, "maxiter": 10, "robberto": False},
        "cosmicRay": cosmic,
        "simSignals": {
            "pointsource": str(catalogs.get("pointsource") or none),
            "galaxyListFile": str(catalogs.get("galaxyListFile") or none),
            "gridded_psf_library_row_padding": 4, "psf_wing_threshold_file": "config",
            "add_psf_wings": sim.psf_wings, "psfpath": str(kit["psfpath"]), "psfwfe": refkit.PSF_WFE,
            "psfwfegroup": refkit.PSF_WFE_GROUP,
            "extended": none, "extendedscale": 1.0, "extendedCenter": "1024,1024", "PSFConvolveExtended": True,
            "movingTargetList": none, "movingTargetSersic": none, "movingTargetExtended": none,
            "movingTargetConvolveExtended": True, "movingTargetToTrack": none,
            "tso_imaging_catalog": none, "tso_grism_catalog": none,
            "zodiacal": none, "zodiscale": 1.0, "scattered": none, "scatteredscale": 1.0,
            "bkgdrate": float(sim.background_rate),  # a number: low/medium/high would query the archive
            "poissonseed": unit.seeds["poisson"], "photonyield": True, "pymethod": True,
            "expand_catalog_for_segments": False, "use_dateobs_for_background": False,
            "signal_low_limit_for_segmap": 0.031, "signal_low_limit_for_segmap_units": "ADU/sec",
            "add_ghosts": False, "PSFConvolveGhosts": False,
        },
        "Telescope": {"ra": float(unit.ra), "dec": float(unit.dec), "rotation": float(unit.pa_v3),
                      "tracking": "sidereal"},
        "Output": {
            "directory": str(outdir), "file": unit.filename("uncal"), "datatype": "raw", "format": "DMS",
            "save_intermediates": False, "grism_source_image": False, "unsigned": True, "dmsOrient": True,
            # ids are strings: YAML would read 01234 as an (octal) number
            "program_number": s.program, "title": s.name, "PI_Name": "dream-hpc",
            "Proposal_category": "GO", "Science_category": "Simulation", "target_name": s.name,
            "target_ra": float(cfg.pointings.center_ra), "target_dec": float(cfg.pointings.center_dec),
            "observation_number": f"{unit.observation:03d}", "observation_label": s.name,
            "visit_number": f"{unit.visit:03d}", "visit_group": f"{unit.visit_group:02d}",
            "visit_id": f"{s.program}{unit.observation:03d}{unit.visit:03d}",
            "sequence_id": f"{unit.sequence:d}", "activity_id": f"{unit.activity:02d}",
            "exposure_number": f"{unit.exposure:05d}",
            "obs_id": (f"V{s.program}{unit.observation:03d}{unit.visit:03d}P0000000"
                       f"{unit.visit_group:02d}{unit.sequence:d}{unit.activity:02d}"),
            "date_obs": unit.date_obs, "time_obs": unit.time_obs,
            "primary_dither_type": _dither_type(cfg.pointings.dither.points, cfg.pointings.dither.pattern),
            "total_primary_dither_positions": cfg.pointings.dither.points,
            "primary_dither_position": unit.dither_index + 1,
            "subpix_dither_type": none, "total_subpix_dither_positions": 1, "subpix_dither_position": 1,
            "xoffset": float(unit.dither_x_arcsec), "yoffset": float(unit.dither_y_arcsec),
        },
    }


def _dither_type(points: int, pattern: str) -> str:
    """The nearest APT primary dither name (the uncal schema accepts only APT's names)."""
    if points == 1:
        return "NONE"
    return {"box": "INTRAMODULEBOX"}.get(pattern, "INTRAMODULE")


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
    from dream_hpc import catalog, refkit

    cfg, run = ctx.cfg, ctx.run
    if not unit.seeds:
        unit.with_seeds(cfg.survey.seed)
    inputs_dir = run.unit_inputs(unit.unit_id)
    inputs_dir.mkdir(parents=True, exist_ok=True)

    # sources that fall on this detector (with a margin for PSF wings)
    sources = catalog.select_for_unit(catalog.load_catalog(cfg), unit, cfg.catalog.margin_arcsec)
    catalogs = catalog.write_mirage_catalogs(sources, unit, inputs_dir)

    refs = mirage_references(unit)
    mirage_data = cfg.resolve(cfg.references.mirage_data)
    kit = {k: Path(v) for k, v in refkit.mirage_paths(mirage_data, unit.detector, unit.filter, unit.readpatt,
                                                       unit.ngroups).items()}

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
                    "dark_prep_product": _rel(run, cached_dark) if cached_dark else None}
    return result
