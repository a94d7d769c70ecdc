"""CRDS best references per work unit (the pinned context, the unit's own date), offline.

Every function here runs after `dream_hpc.offline.configure(...)` pointed CRDS at the pinned
context in serverless local mode: CRDS reads its environment once per process, so nothing here
may import crds before that. References are looked up the way jwst looks them up (the same
parameters, the exposure's own observation date), but without CRDS's download fallback: a file
missing from the cache is named with its fix instead of failing as `CrdsNetworkError`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

from dream_hpc.config import PIPELINE_CLASSES, READ_PATTERNS, SurveyConfig
from dream_hpc.core.errors import UserError
from dream_hpc.core.workunit import WorkUnit

FORMATS = ("names", "paths", "crds-sync")


# --- the CRDS view of one exposure --------------------------------------------------------------
def dms_detector(detector: str) -> str:
    """The DETECTOR keyword jwst and CRDS use: NRCA5/NRCB5 are written NRCALONG/NRCBLONG."""
    d = detector.upper()
    return d[:4] + "LONG" if d in ("NRCA5", "NRCB5") else d


def header_for_unit(unit: WorkUnit) -> dict[str, object]:
    """The CRDS matching parameters of a unit's exposure, as `DataModel.get_crds_parameters()` gives them.

    Covers every parameter key the JWST NIRCam rules match on (detector, filter, pupil, channel,
    module, exposure type, read pattern, outputs, subarray, visit flags, observation date/time).
    """
    detector = dms_detector(unit.detector)
    nframes, groupgap = READ_PATTERNS.get(unit.readpatt, (1, 0))
    return {
        "meta.telescope": "JWST",
        "meta.instrument.name": "NIRCAM",
        "meta.instrument.detector": detector,
        "meta.instrument.filter": unit.filter.upper(),
        "meta.instrument.pupil": unit.pupil.upper(),
        "meta.instrument.channel": unit.channel,
        "meta.instrument.module": detector[3],  # NRCB1 / NRCBLONG -> B
        "meta.exposure.type": "NRC_IMAGE",
        "meta.exposure.readpatt": unit.readpatt,
        "meta.exposure.ngroups": unit.ngroups,
        "meta.exposure.nints": unit.nints,
        "meta.exposure.nframes": nframes,
        "meta.exposure.groupgap": groupgap,
        "meta.exposure.noutputs": 4 if unit.subarray == "FULL" else 1,  # NIRCam subarrays read one output
        "meta.subarray.name": unit.subarray,
        "meta.observation.date": unit.date_obs,
        "meta.observation.time": unit.time_obs,
        "meta.visit.type": "PRIME_TARGETED_FIXED",
        "meta.visit.tsovisit": False,
        "meta.visit.crowded_field": False,
    }


@functools.cache
@functools.cache
def pipeline_class(pipeline: str) -> type:
    """The jwst pipeline class of `pipeline` (detector1, image2, image3); imports jwst."""
    import jwst.pipeline

    return getattr(jwst.pipeline, PIPELINE_CLASSES[pipeline])


def pipeline_reftypes(cfg: SurveyConfig | None = None) -> dict[str, list[str]]:
    """Pipeline -> reference types its steps prefetch (steps that run, with the survey's `skip` overrides)."""
    out = {}
    for name in PIPELINE_CLASSES:
        skips = {}
        if cfg is not None:
            skips = {step: {"skip": bool(params["skip"])}
                     for step, params in getattr(cfg.pipeline, name).items() if "skip" in params}
        pipe = pipeline_class(name)(steps=skips)
        out[name] = sorted(set(pipe.reference_file_types))
    return out


def all_step_reftypes() -> dict[str, list[str]]:
    """Pipeline -> reference types of all of its steps, skipped ones included (what a context must cover)."""
    out = {}
    for name in PIPELINE_CLASSES:
        cls = pipeline_class(name)
        out[name] = sorted({t for step in cls.step_defs.values() for t in step.reference_file_types})
    return out


def parameter_reftypes() -> dict[str, list[str]]:
    """Pipeline -> `pars-*` types stpipe asks CRDS for (the pipeline's and every step's parameters)."""
    out = {}
    for name in PIPELINE_CLASSES:
        cls = pipeline_class(name)
        out[name] = sorted({cls.get_config_reftype()} | {s.get_config_reftype() for s in cls.step_defs.values()})
    return out


def default_reftypes(cfg: SurveyConfig | None = None) -> list[str]:
    """Every reference type a survey's three pipelines look up: prefetched types plus `pars-*`."""
    if cfg is None:
        return list(_jwst_default_reftypes())
    types: set[str] = set()
    for group in (pipeline_reftypes(cfg), parameter_reftypes()):
        for names in group.values():
            types.update(names)
    return sorted(types)


@functools.cache
def _jwst_default_reftypes() -> tuple[str, ...]:
    return tuple(default_reftypes(SurveyConfig()))


def context_name() -> str:
    return os.environ.get("CRDS_CONTEXT", "") or "the CRDS context"


@functools.lru_cache(maxsize=4096)
def _recommend(header_items: tuple, reftypes: tuple[str, ...]) -> dict[str, str]:
    import crds

    try:
        return crds.getrecommendations(dict(header_items), reftypes=list(reftypes), observatory="jwst")
    except Exception as e:  # a mapping missing or damaged: CRDS would try the (absent) server
        ctx = context_name()
        raise UserError(f"CRDS cannot load {ctx} from {os.environ.get('CRDS_PATH', '?')} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); run `dream-hpc cache verify` "
                        f"on it, then re-sync mappings with `crds sync --contexts {ctx}` or rebuild the kit") from None


def recommendations(unit: WorkUnit, reftypes: Iterable[str] | None = None) -> dict[str, str | None]:
    """Reftype -> best reference file name for the unit (None where the context says N/A).

    Raises UserError naming the reftype when the context has no rule for a prefetched type or no
    match for this exposure (a `pars-*` type without a rule just means jwst's defaults).
    """
    types = tuple(sorted(set(reftypes) if reftypes is not None else default_reftypes()))
    header = header_for_unit(unit)
    found = _recommend(tuple(sorted(header.items())), types)
    out: dict[str, str | None] = {}
    for reftype in types:
        value = str(found.get(reftype, "NOT FOUND no answer"))
        if not value.upper().startswith("NOT FOUND"):
            out[reftype] = value
            continue
        reason = value[len("NOT FOUND"):].strip()
        if reason.lower() == "n/a" or (reftype.startswith("pars-") and "unknown reference type" in reason.lower()):
            out[reftype] = None
            continue
        raise UserError(f"no {reftype} reference for {unit.unit_id} ({unit.detector} {unit.filter} "
                        f"{unit.subarray} {unit.readpatt}, {unit.date_obs}) in {context_name()}: {reason}; "
                        f"fix: build the kit for it (`dream-hpc refkit build --detectors {unit.detector} --filters "
                        f"{unit.filter} --readpatt {unit.readpatt} ...`) or pin a context that covers it "
                        "(references.context)")
    return out


def reference_path(name: str) -> Path:
    """Where the CRDS cache keeps (or would keep) reference `name`."""
    from crds.core import config as crds_config

    return Path(crds_config.locate_file(name, "jwst"))


def best_references(unit: WorkUnit, reftypes: Iterable[str] | None = None) -> dict[str, Path]:
    """Reftype -> path of the best reference in the cache (N/A types omitted).

    A reference the context selects but the cache lacks raises UserError naming it and the fix
    (CRDS itself would try to download it and fail with `CrdsNetworkError ... server-less mode`).
    """
    paths: dict[str, Path] = {}
    for reftype, name in recommendations(unit, reftypes).items():
        if name is None:
            continue
        path = reference_path(name)
        if not path.is_file():
            raise UserError(f"{reftype} reference {name} for {unit.unit_id} is not in the CRDS cache ({path}); "
                            f"fix: `crds sync --contexts {context_name()} --files {name}` on a connected node "
                            "(see `dream-hpc cache refs CONFIG --format crds-sync`), or rebuild the kit")
        paths[reftype] = path
    return paths


def reference_names(units: Iterable[WorkUnit], reftypes: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Reference file name -> reftypes it serves, over all `units` (what a cache must hold for them)."""
    types = list(reftypes) if reftypes is not None else default_reftypes()
    names: dict[str, set[str]] = {}
    for unit in units:
        for reftype, name in recommendations(unit, types).items():
            if name is not None:
                names.setdefault(name, set()).add(reftype)
    return names
