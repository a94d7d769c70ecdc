"""What Mirage is given for one unit: its references by full path, the dark reused per readout, the yaml.

Every reference Mirage reads is resolved from the pinned CRDS context at the exposure's own
observation date (the same files Detector1/Image2 will use) and written into the yaml as a full
path: a Reffiles key left out silently becomes `crds`, and a failed lookup inside Mirage calls
`sys.exit(-1)`. MIRAGE_DATA files (linearized dark, PSF library, cosmic rays, QE flat) come from the kit.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from dream_hpc.core.digests import file_sha256
from dream_hpc.core.rundir import atomic_path
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.stages.contract import StageContext


class SimulationError(RuntimeError):
    """Mirage failed for one unit; the message names the phase and the likely cause."""


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


# --- references ------------------------------------------------------------------------------
def mirage_references(unit: WorkUnit) -> dict[str, Path]:
    """Mirage Reffiles key -> reference file, from the pinned context at the unit's own date."""
    from dream_hpc.references import lookup

    found = lookup.best_references(unit, sorted(set(MIRAGE_REFTYPES.values())))
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


def background_truth(cfg: Any, unit: WorkUnit) -> dict[str, Any]:
    """The sky this unit's exposure gets (`simulation.background_rate` resolved for its filter, field, date)."""
    from dream_hpc.stages import zodiacal

    return zodiacal.background_truth(cfg.simulation.background_rate, unit.ra, unit.dec, unit.date_obs,
                                     unit.time_obs, unit.detector, unit.filter, unit.pupil)


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
    # Mirage's obs_generator checks that the cosmic-ray library path exists even when it is "None" (its
    # switch for no cosmic rays), so "no cosmic rays" is the real library at rate scale 0: no hits drawn
    cosmic = {"path": str(kit["cosmic_ray_path"]),
              "library": sim.cosmic_ray_library, "scale": sim.cosmic_ray_scale if sim.cosmic_rays else 0.0,
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
            "bkgdrate": float(background_truth(cfg, unit)["adu_s"]),  # a number: low/medium/high would query the archive
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
