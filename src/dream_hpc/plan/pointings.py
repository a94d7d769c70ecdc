"""The survey plan: pointings (generated mosaic or APT export), dithers, filters and detectors -> work units.

`make_plan(cfg)` returns one WorkUnit per (visit, filter pair, dither, detector): visit = mosaic
tile (or APT visit), activity = filter pair, exposure = dither, jwst-style ids, per-unit seeds
from the survey seed and the unit id, observation times increasing exposure by exposure, and the
cost estimate the engine uses to schedule longest-first. Every pointing is the target (the mosaic
centre or the APT target) placed at a (V2, V3) in the telescope frame, exactly as APT's .pointing
file describes it; each unit's RA/Dec is then its aperture reference point computed the way
Mirage's yaml generator does (`mirage.apt.apt_inputs.ra_dec_update`).

`dream-hpc plan CONFIG [--out RUN] [--measured RUN]` prints the size and writes plan.json and a
footprint PNG; `--measured` adds advice from a run's measured memory (`plan_measured`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from dream_hpc.config import LW_DETECTORS, READ_PATTERNS, SUBARRAYS, SurveyConfig, is_short_wave
from dream_hpc.core.errors import UserError
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import cost, footprint

# Observatory overheads between exposures (s): why: realistic, monotonically increasing DATE-OBS
OVERHEAD_DITHER_S = 30.0  # small-angle maneuver + settle
OVERHEAD_FILTER_S = 60.0  # filter wheel move between filter pairs
OVERHEAD_VISIT_S = 600.0  # slew + guide-star acquisition between visits


class PlanError(UserError):
    """A plan that cannot be made as configured, as one line."""


@dataclass
class Exposure:
    """One telescope exposure: the target placed at (v2, v3) with one filter pair."""

    program: str
    observation: int
    visit: int
    activity: int
    exposure: int
    sw_filter: tuple[str, str]  # (filter, pupil)
    lw_filter: tuple[str, str]
    readpatt: str
    ngroups: int
    nints: int
    subarray: str
    detectors: list[str]
    target_ra: float
    target_dec: float
    v2: float
    v3: float
    dither_x: float
    dither_y: float
    pointing_index: int
    dither_index: int
    pair_index: int


# --- timing ----------------------------------------------------------------------------------
def frame_time(subarray: str) -> float:
    """NIRCam frame time (s) as Mirage's `calc_frame_time`: 4 outputs for FULL, 1 for subarrays."""
    ap = footprint.aperture(footprint.aperture_name("NRCB1", subarray))
    nx, ny = int(ap.XSciSize), int(ap.YSciSize)
    if subarray == "FULL":
        return ((nx / 4 + 12) * (ny + 1) + 1) * 1e-5
    return ((nx + 12) * (ny + (3 if nx <= 8 and ny <= 8 else 2))) * 1e-5


def exposure_duration(readpatt: str, ngroups: int, nints: int, subarray: str) -> float:
    """Wall time of one exposure (s): each integration reads ngroups groups plus a reset frame."""
    nframes, groupgap = READ_PATTERNS[readpatt]
    return nints * (ngroups * (nframes + groupgap) - groupgap + 1) * frame_time(subarray)


def effective_exposure_time(readpatt: str, ngroups: int, nints: int, subarray: str) -> float:
    """Time between the first and last group (the slope baseline), summed over integrations (s)."""
    nframes, groupgap = READ_PATTERNS[readpatt]
    return nints * (ngroups - 1) * (nframes + groupgap) * frame_time(subarray)


# --- pointings -------------------------------------------------------------------------------
def reference_aperture(detectors: list[str], subarray: str) -> str:
    """The aperture a pointing is defined on: the module(s) for FULL, else the (LW) subarray aperture."""
    dets = [d.upper() for d in detectors]
    if subarray == "FULL":
        modules = {d[3] for d in dets}
        if modules == {"A", "B"}:
            return "NRCALL_FULL"
        m = modules.pop()
        return f"NRC{m}S_FULL" if any(is_short_wave(d) for d in dets) else f"NRC{m}5_FULL"
    lw = [d for d in dets if d in LW_DETECTORS]
    return footprint.aperture_name((lw or dets)[0], subarray)


def _channel_extent(ref: str, detectors: list[str], subarray: str) -> tuple[float, float]:
    """Smallest (x, y) extent (arcsec) over channels of the union of that channel's detector outlines."""
    extents = []
    for short in (True, False):
        xs, ys = [], []
        for d in detectors:
            if is_short_wave(d) != short:
                continue
            corners = footprint.outline_tel(footprint.aperture_name(d, subarray))
            x, y = footprint.tel_to_idl(ref, corners[:, 0], corners[:, 1])
            xs.extend(x)
            ys.extend(y)
        if xs:
            extents.append((max(xs) - min(xs), max(ys) - min(ys)))
    return min(e[0] for e in extents), min(e[1] for e in extents)


def tile_offsets(cfg: SurveyConfig, ref: str) -> list[tuple[float, float]]:
    """Ideal-frame (x, y) arcsec of each mosaic tile, centred on 0; rows along y, cols along x."""
    p = cfg.pointings
    sx, sy = p.step_arcsec
    if (sx == 0 and p.cols > 1) or (sy == 0 and p.rows > 1):
        ex, ey = _channel_extent(ref, cfg.instrument.detectors, cfg.instrument.subarray)
        sx = sx or ex * (1.0 - p.overlap)
        sy = sy or ey * (1.0 - p.overlap)
    return [((c - (p.cols - 1) / 2) * sx, (r - (p.rows - 1) / 2) * sy)
            for r in range(p.rows) for c in range(p.cols)]


def dither_offsets(cfg: SurveyConfig) -> list[tuple[float, float]]:
    """Ideal-frame (x, y) arcsec of each dither position, centred on 0."""
    d = cfg.pointings.dither
    n, step = d.points, d.step_arcsec
    if d.pattern == "line":  # a diagonal line samples sub-pixel phases in x and y at once
        return [((i - (n - 1) / 2) * step, (i - (n - 1) / 2) * step * 0.5) for i in range(n)]
    if d.pattern == "box":
        k = math.ceil(math.sqrt(n))
        return [((i % k - (k - 1) / 2) * step, (i // k - (k - 1) / 2) * step) for i in range(n)]
    digest = hashlib.sha256(f"dream-hpc:{cfg.survey.seed}:dither".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    xy = rng.uniform(-step / 2, step / 2, size=(n, 2))
    return [(0.0, 0.0)] + [tuple(map(float, v)) for v in xy[1:]]


def mosaic_exposures(cfg: SurveyConfig) -> list[Exposure]:
    ins = cfg.instrument
    ref = reference_aperture(ins.detectors, ins.subarray)
    footprint.aperture(ref)  # a clear error for an aperture pysiaf does not know
    tiles, dithers = tile_offsets(cfg, ref), dither_offsets(cfg)
    if len(tiles) > 999:
        raise PlanError(f"pointings.rows x cols: {len(tiles)} tiles, but a jwst visit number has 3 digits "
                        "(split the survey into several observations/configs of at most 999 visits)")
    out = []
    for t, (tx, ty) in enumerate(tiles):
        for k, (sw, lw) in enumerate(ins.filter_pairs):
            for j, (dx, dy) in enumerate(dithers):
                v2, v3 = footprint.idl_to_tel(ref, tx + dx, ty + dy)
                out.append(Exposure(
                    program=cfg.survey.program, observation=cfg.survey.observation, visit=t + 1, activity=k + 1,
                    exposure=j + 1, sw_filter=(sw.upper(), "CLEAR"), lw_filter=(lw.upper(), "CLEAR"),
                    readpatt=ins.readout.readpatt, ngroups=ins.readout.ngroups, nints=ins.readout.nints,
                    subarray=ins.subarray, detectors=[d.upper() for d in ins.detectors],
                    target_ra=cfg.pointings.center_ra, target_dec=cfg.pointings.center_dec,
                    v2=float(v2), v3=float(v3), dither_x=dx, dither_y=dy,
                    pointing_index=t, dither_index=j, pair_index=k))
    return out


def apt_exposures(cfg: SurveyConfig) -> list[Exposure]:
    """Exposures from the APT exports; filters, readout and subarray come from the .xml (as in Mirage)."""
    from dream_hpc.plan import apt

    try:
        rows = apt.read_apt(cfg.resolve(cfg.pointings.apt.xml), cfg.resolve(cfg.pointings.apt.pointing),
                            cfg.survey.program)
    except apt.AptError as e:
        raise PlanError(str(e)) from None
    out: list[Exposure] = []
    visits: dict[tuple[int, int], int] = {}
    counters: dict[tuple[int, int, int], int] = {}
    for r in rows:
        where = f"pointings.apt.xml: observation {r.observation}"
        if r.readpatt not in READ_PATTERNS:
            raise PlanError(f"{where}: unknown readout pattern {r.readpatt!r}")
        if r.subarray not in SUBARRAYS:
            raise PlanError(f"{where}: subarray {r.subarray!r} is not supported (one of {', '.join(SUBARRAYS)})")
        dets = [d.upper() for d in cfg.instrument.detectors if r.module in ("ALL", "") or d.upper()[3] in r.module]
        if not dets:
            raise PlanError(f"{where}: module {r.module} holds none of instrument.detectors "
                            f"({', '.join(cfg.instrument.detectors)}); list detectors of that module")
        visit_key = (r.observation, r.visit)
        visits.setdefault(visit_key, len(visits))
        ckey = (r.observation, r.visit, r.filter_config)
        counters[ckey] = counters.get(ckey, 0) + 1
        out.append(Exposure(
            program=r.program, observation=r.observation, visit=r.visit, activity=r.filter_config + 1,
            exposure=counters[ckey], sw_filter=(r.short_filter.upper(), r.short_pupil.upper()),
            lw_filter=(r.long_filter.upper(), r.long_pupil.upper()), readpatt=r.readpatt, ngroups=r.ngroups,
            nints=r.nints, subarray=r.subarray, detectors=dets, target_ra=r.target_ra, target_dec=r.target_dec,
            v2=r.v2, v3=r.v3, dither_x=r.dither_x, dither_y=r.dither_y, pointing_index=visits[visit_key],
            dither_index=counters[ckey] - 1, pair_index=r.filter_config))
    return out


def _times(cfg: SurveyConfig, exposures: list[Exposure]) -> list[tuple[str, str]]:
    """DATE-OBS/TIME-OBS per exposure: start time plus durations and overheads, in plan order."""
    t = dt.datetime.fromisoformat(f"{cfg.survey.start_date}T{cfg.survey.start_time}")
    out, prev = [], None
    for e in exposures:
        if prev is not None:
            t += dt.timedelta(seconds=exposure_duration(prev.readpatt, prev.ngroups, prev.nints, prev.subarray))
            if (e.observation, e.visit) != (prev.observation, prev.visit):
                t += dt.timedelta(seconds=OVERHEAD_VISIT_S)
            elif e.activity != prev.activity:
                t += dt.timedelta(seconds=OVERHEAD_FILTER_S)
            else:
                t += dt.timedelta(seconds=OVERHEAD_DITHER_S)
        out.append((t.date().isoformat(), t.time().isoformat(timespec="milliseconds")))
        prev = e
    return out


def units_from_exposures(cfg: SurveyConfig, exposures: list[Exposure]) -> list[WorkUnit]:
    units: list[WorkUnit] = []
    for e, (date, time) in zip(exposures, _times(cfg, exposures), strict=True):
        att = footprint.attitude(e.target_ra, e.target_dec, cfg.pointings.pa_v3, e.v2, e.v3)
        for det in e.detectors:
            filt, pupil = e.sw_filter if is_short_wave(det) else e.lw_filter
            ra, dec = footprint.sky_of(att, *footprint.reference_point(footprint.aperture_name(det, e.subarray)))
            units.append(WorkUnit(
                program=e.program, observation=e.observation, visit=e.visit, visit_group=1, sequence=1,
                activity=e.activity, exposure=e.exposure, detector=det, filter=filt, pupil=pupil,
                subarray=e.subarray, readpatt=e.readpatt, ngroups=e.ngroups, nints=e.nints,
                ra=float(ra), dec=float(dec), pa_v3=cfg.pointings.pa_v3, date_obs=date, time_obs=time,
                pointing_index=e.pointing_index, dither_index=e.dither_index, pair_index=e.pair_index,
                dither_x_arcsec=float(e.dither_x), dither_y_arcsec=float(e.dither_y)
            ).with_seeds(cfg.survey.seed))
    return units


def make_plan(cfg: SurveyConfig) -> list[WorkUnit]:
    """Every work unit of the survey, in observing order, with seeds and cost estimates."""
    exposures = apt_exposures(cfg) if cfg.pointings.mode == "apt" else mosaic_exposures(cfg)
    units = units_from_exposures(cfg, exposures)
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PlanError(f"two units share the id {dup} (the APT export repeats a visit/exposure number)")
    cost.annotate(units)
    return units


def survey_filters(cfg: SurveyConfig) -> list[str]:
    """The filters the survey observes (cheap: no footprint math)."""
    if cfg.pointings.mode == "apt":
        from dream_hpc.plan import apt

        try:
            _, rows = apt.read_xml(cfg.resolve(cfg.pointings.apt.xml))
        except apt.AptError as e:
            raise PlanError(str(e)) from None
        return sorted({r[k].upper() for r in rows for k in ("short_filter", "long_filter")})
    return sorted({f.upper() for pair in cfg.instrument.filter_pairs for f in pair})


def is_short_wave_filter(filt: str) -> bool:
    from dream_hpc.config import SW_FILTERS

    return filt.upper() in SW_FILTERS
