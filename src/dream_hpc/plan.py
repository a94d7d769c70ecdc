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
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc import cost, footprint
from dream_hpc.cli import UserError
from dream_hpc.config import LW_DETECTORS, READ_PATTERNS, SUBARRAYS, SurveyConfig, is_short_wave
from dream_hpc.workunit import WorkUnit

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
    from dream_hpc import apt

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
        from dream_hpc import apt

        try:
            _, rows = apt.read_xml(cfg.resolve(cfg.pointings.apt.xml))
        except apt.AptError as e:
            raise PlanError(str(e)) from None
        return sorted({r[k].upper() for r in rows for k in ("short_filter", "long_filter")})
    return sorted({f.upper() for pair in cfg.instrument.filter_pairs for f in pair})


# --- summary, plan.json ----------------------------------------------------------------------
def summarize(cfg: SurveyConfig, units: list[WorkUnit], node_mem_gb: float = 24.0, node_cores: int = 2,
              measured_run: str | Path | None = None) -> dict:
    """Size and cost of the plan: units, pixels, CPU-hours per stage, memory, Image3 per filter; with
    `measured_run`, also the advice from that run's measured peak memory and CPU (key "measured")."""
    stages = {"simulate": 0.0, "detector1": 0.0, "image2": 0.0}
    peak = dict.fromkeys(stages, 0.0)
    pixels = reads = 0
    by_filter: dict[str, dict[str, Any]] = {}
    pix_cache: dict[tuple[str, str], int] = {}
    for u in units:
        key = (u.detector, u.subarray)
        npix = pix_cache.setdefault(key, cost.unit_pixels(u))
        for stage, c in cost.unit_costs(u, npix).items():
            stages[stage] += c.cpu_s
            peak[stage] = max(peak[stage], c.mem_mb)
        pixels += npix
        reads += npix * u.ngroups * u.nints
        f = by_filter.setdefault(u.filter, {"inputs": 0, "input_pixels": 0, "channel": u.channel, "units": []})
        f["inputs"] += 1
        f["input_pixels"] += npix
        f["units"].append(u)
    area = footprint_area_arcsec2(units)
    image3 = {}
    for filt, f in sorted(by_filter.items()):
        out_pix = area.get(f["channel"], 0.0) / cost.PIXEL_SCALE[f["channel"]] ** 2
        c = cost.image3_cost(f["inputs"], f["input_pixels"], out_pix, cost.exposure_groups(f["units"]))
        image3[filt] = {"inputs": f["inputs"], "output_pixels": int(out_pix), "cpu_s": round(c.cpu_s, 1),
                        "mem_mb": round(c.mem_mb)}
    peak_unit = max(peak.values()) if units else 0.0
    ranks = cost.ranks_per_node(peak_unit, node_mem_gb, node_cores)
    cpu_total = sum(stages.values())
    exposures = {(u.observation, u.visit, u.activity, u.exposure) for u in units}
    summary = {
        "survey": cfg.survey.name, "units": len(units), "exposures": len(exposures),
        "visits": len({(u.observation, u.visit) for u in units}),
        "filters": sorted(by_filter), "detectors": sorted({u.detector for u in units}),
        "subarray": sorted({u.subarray for u in units}), "pixels": pixels, "pixel_reads": reads,
        "cpu_hours": {k: round(v / 3600.0, 3) for k, v in stages.items()} | {"total": round(cpu_total / 3600, 3)},
        "peak_mem_mb": {k: round(v) for k, v in peak.items()}, "unit_peak_mem_mb": round(peak_unit),
        "image3": image3, "image3_cpu_hours": round(sum(v["cpu_s"] for v in image3.values()) / 3600.0, 3),
        "footprint_arcmin2": {k: round(v / 3600.0, 2) for k, v in area.items()},
        "node": {"mem_gb": node_mem_gb, "cores": node_cores, "ranks_per_node": ranks,
                 "node_hours": round(cpu_total / 3600.0 / ranks, 2) if ranks else None},
        "first_exposure": f"{units[0].date_obs}T{units[0].time_obs}" if units else None,
        "last_exposure": f"{units[-1].date_obs}T{units[-1].time_obs}" if units else None,
    }
    if measured_run is not None:
        from dream_hpc.plan_measured import measured_advice

        summary["measured"] = measured_advice(units, measured_run, node_mem_gb, node_cores)
    return summary


def footprint_area_arcsec2(units: list[WorkUnit]) -> dict[str, float]:
    """Sky area covered per channel (union of outlines), in arcsec^2, rasterised on a tangent plane."""
    from matplotlib.path import Path as MplPath

    if not units:
        return {}
    ra0, dec0 = _centre(units)
    out = {}
    for channel in ("SHORT", "LONG"):
        polys = [p for p, ch in _outlines(units, ra0, dec0) if ch == channel]
        if not polys:
            continue
        allxy = np.vstack(polys)
        lo, hi = allxy.min(axis=0), allxy.max(axis=0)
        step = max((hi - lo).max() / 800.0, 0.05)
        nx, ny = int(np.ceil((hi[0] - lo[0]) / step)) + 1, int(np.ceil((hi[1] - lo[1]) / step)) + 1
        covered = np.zeros((ny, nx), bool)
        for poly in polys:  # rasterise each outline over its own bounding box only
            (i0, j0), (i1, j1) = ((poly.min(axis=0) - lo) // step).astype(int), ((poly.max(axis=0) - lo) // step).astype(int) + 1
            gx, gy = np.meshgrid(lo[0] + (np.arange(i0, i1) + 0.5) * step, lo[1] + (np.arange(j0, j1) + 0.5) * step)
            inside = MplPath(poly).contains_points(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
            covered[j0:j1, i0:i1] |= inside
        out[channel] = float(covered.sum() * step * step)
    return out


def _centre(units: list[WorkUnit]) -> tuple[float, float]:
    v = footprint.unit_vectors([u.ra for u in units], [u.dec for u in units]).mean(axis=0)
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v))))


_OUTLINE_CACHE: dict[tuple, np.ndarray] = {}


def _outlines(units: list[WorkUnit], ra0: float, dec0: float) -> list[tuple[np.ndarray, str]]:
    """Tangent-plane outline (4, 2 arcsec, x = East) and channel of each distinct unit footprint."""
    out, seen = [], set()
    for u in units:
        key = (u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), u.pa_v3, ra0, dec0)
        if key in seen:
            continue
        seen.add(key)
        if key not in _OUTLINE_CACHE:
            ra, dec = footprint.outline_sky(u.ra, u.dec, u.pa_v3, footprint.aperture_name(u.detector, u.subarray))
            _OUTLINE_CACHE[key] = np.column_stack(footprint.tangent_offsets(ra, dec, ra0, dec0))
        out.append((_OUTLINE_CACHE[key], u.channel))
    return out


def write_plan(path: str | Path, units: list[WorkUnit], summary: dict) -> Path:
    """plan.json: the summary and every unit; refuses to replace a different plan already there."""
    from dream_hpc.rundir import atomic_write_text

    path = Path(path)
    doc = {"summary": summary, "units": [u.to_dict() for u in units]}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            old_ids = [u.get("unit_id") for u in old.get("units", [])]
        except (OSError, ValueError):
            old_ids = None
        if old_ids != [u.unit_id for u in units]:
            raise PlanError(f"{path}: a different plan is already there (its units differ); use another --out "
                            "or remove the old run")
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def load_plan(path: str | Path) -> list[WorkUnit]:
    doc = json.loads(Path(path).read_text())
    return [WorkUnit.from_dict(d) for d in doc["units"]]


# --- the footprint picture -------------------------------------------------------------------
FILTER_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def footprint_png(cfg: SurveyConfig, units: list[WorkUnit], path: str | Path, catalog_ra_dec: Any = None) -> Path:
    """Detector outlines per filter over the catalog's source density, on a tangent plane (East left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D

    from dream_hpc.rundir import atomic_path

    ra0, dec0 = _centre(units)
    scale = 60.0 if _span(units, ra0, dec0) > 300 else 1.0  # arcmin for big surveys, arcsec for small
    unit_name = "arcmin" if scale == 60.0 else "arcsec"
    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    if catalog_ra_dec is not None and len(catalog_ra_dec[0]):
        x, y = footprint.tangent_offsets(*catalog_ra_dec, ra0, dec0)
        allxy = np.vstack([p for p, _ in _outlines(units, ra0, dec0)])
        pad = 0.15 * (allxy.max() - allxy.min())
        lo, hi = allxy.min(axis=0) - pad, allxy.max(axis=0) + pad
        sel = (x > lo[0]) & (x < hi[0]) & (y > lo[1]) & (y < hi[1])
        nb = int(np.clip(np.sqrt(sel.sum() / 15.0), 6, 80))  # ~15 sources per bin: a density, not dots
        h, xe, ye = np.histogram2d(x[sel], y[sel], bins=nb, range=[[lo[0], hi[0]], [lo[1], hi[1]]])
        per_arcmin2 = h / ((xe[1] - xe[0]) * (ye[1] - ye[0]) / 3600.0)
        im = ax.imshow(np.log10(np.maximum(per_arcmin2.T, 1.0)), origin="lower", cmap="Greys", alpha=0.7,
                       interpolation="bicubic",
                       extent=[xe[0] / scale, xe[-1] / scale, ye[0] / scale, ye[-1] / scale], aspect="equal")
        cb = fig.colorbar(im, ax=ax, shrink=0.7, pad=0.02)
        cb.set_label("catalog sources per arcmin$^2$ (log$_{10}$)")
    filters = sorted({u.filter for u in units}, key=lambda f: (not is_short_wave_filter(f), f))
    handles = []
    for i, filt in enumerate(filters):
        sub = [u for u in units if u.filter == filt]
        polys = [p / scale for p, _ in _outlines(sub, ra0, dec0)]
        colour = FILTER_COLOURS[i % len(FILTER_COLOURS)]
        lw = "-" if is_short_wave_filter(filt) else "--"
        ax.add_collection(PolyCollection(polys, facecolors=colour, edgecolors="none",
                                         alpha=0.08 if len(polys) < 2000 else 0.04))
        ax.add_collection(PolyCollection(polys, facecolors="none", edgecolors=colour, linewidths=0.6, linestyles=lw))
        handles.append(Line2D([], [], color=colour, ls=lw, lw=2,
                              label=f"{filt} ({'SW' if is_short_wave_filter(filt) else 'LW'}): {len(sub)} units"))
    if len(units) <= 500:  # beyond that the markers hide the outlines
        px, py = footprint.tangent_offsets([u.ra for u in units], [u.dec for u in units], ra0, dec0)
        ax.plot(px / scale, py / scale, "k+", ms=4, alpha=0.6)
        handles.append(Line2D([], [], color="k", marker="+", ls="none", label="aperture reference points"))
    allxy = np.vstack([p for p, _ in _outlines(units, ra0, dec0)]) / scale
    pad = 0.08 * (allxy.max() - allxy.min())
    ax.set_xlim(allxy[:, 0].max() + pad, allxy[:, 0].min() - pad)  # East to the left, as on the sky
    ax.set_ylim(allxy[:, 1].min() - pad, allxy[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"East offset ({unit_name}) from RA {ra0:.5f}")
    ax.set_ylabel(f"North offset ({unit_name}) from Dec {dec0:.5f}")
    n_vis = len({(u.observation, u.visit) for u in units})
    ax.set_title(f"{cfg.survey.name}: {len(units)} units, {n_vis} visits, "
                 f"{', '.join(sorted({u.subarray for u in units}))}, PA_V3 {cfg.pointings.pa_v3:g}")
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.85)
    ax.grid(alpha=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def is_short_wave_filter(filt: str) -> bool:
    from dream_hpc.config import SW_FILTERS

    return filt.upper() in SW_FILTERS


def _span(units: list[WorkUnit], ra0: float, dec0: float) -> float:
    x, y = footprint.tangent_offsets([u.ra for u in units], [u.dec for u in units], ra0, dec0)
    return float(max(np.ptp(x), np.ptp(y)))


# --- the command -----------------------------------------------------------------------------
def format_summary(s: dict) -> str:
    h = s["cpu_hours"]
    lines = [
        f"survey {s['survey']}: {s['units']:,} units = {s['exposures']:,} exposures x detectors "
        f"({', '.join(s['detectors'])}), {s['visits']} visits, filters {', '.join(s['filters'])}, {', '.join(s['subarray'])}",
        f"pixels: {s['pixels']:,} per pass ({s['pixel_reads']:,} group reads)",
        f"CPU-hours: simulate {h['simulate']:.2f}, detector1 {h['detector1']:.2f}, image2 {h['image2']:.2f}, "
        f"total {h['total']:.2f} (+ Image3 {s['image3_cpu_hours']:.2f})",
        f"peak memory per unit: simulate {s['peak_mem_mb']['simulate'] / 1024:.2f} GiB, detector1 "
        f"{s['peak_mem_mb']['detector1'] / 1024:.2f} GiB, image2 {s['peak_mem_mb']['image2'] / 1024:.2f} GiB",
    ]
    for filt, c in s["image3"].items():
        lines.append(f"Image3 {filt}: {c['inputs']} inputs -> {c['output_pixels'] / 1e6:,.1f} Mpix mosaic, "
                     f"~{c['cpu_s'] / 60:.1f} CPU-min, ~{c['mem_mb'] / 1024:.1f} GiB")
    n = s["node"]
    if n["ranks_per_node"]:
        lines.append(f"advice: {n['ranks_per_node']} ranks per node ({n['cores']} cores, {n['mem_gb']:g} GB), "
                     f"~{n['node_hours']:.2f} node-hours for the per-unit stages")
    else:
        lines.append(f"advice: one unit needs {s['unit_peak_mem_mb'] / 1024:.1f} GiB, more than a "
                     f"{n['mem_gb']:g} GB node allows: use bigger nodes or fewer groups")
    big = [f for f, c in s["image3"].items() if c["mem_mb"] > 0.85 * n["mem_gb"] * 1024]
    if big:
        lines.append(f"note: Image3 for {', '.join(big)} will not fit one node; split the mosaic into tiles "
                     "(COSMOS-Web reduced its mosaic in 20 tiles)")
    if "measured" in s:
        from dream_hpc.plan_measured import format_measured

        lines.append(format_measured(s["measured"], s))
    return "\n".join(lines)


def _cmd_plan(args: Any) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.rundir import RunDir

    cfg = load_config(args.config)
    units = make_plan(cfg)
    summary = summarize(cfg, units, args.node_mem_gb, args.node_cores, measured_run=args.measured)
    print(format_summary(summary))
    if not args.out:
        print("(pass --out RUN to write RUN/plan.json and RUN/figures/footprint.png)")
        return 0
    run = RunDir.create(args.out)
    write_plan(run.plan, units, summary)
    radec, note = None, ""
    try:
        from dream_hpc import catalog

        s = catalog.load_catalog(cfg, sorted({u.filter for u in units})).sources
        radec = (s.ra, s.dec)
    except UserError as e:
        note = f" (no catalog density: {e})"
    png = footprint_png(cfg, units, run.figures / "footprint.png", radec)
    print(f"wrote {run.plan} and {png}{note}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("plan", help="expand the survey into work units; print its size and cost")
    p.add_argument("config")
    p.add_argument("--out", help="run directory: writes RUN/plan.json and RUN/figures/footprint.png")
    p.add_argument("--node-mem-gb", type=float, default=24.0, help="memory per node for the ranks advice")
    p.add_argument("--node-cores", type=int, default=2, help="cores per node for the ranks advice")
    p.add_argument("--measured", metavar="RUN",
                   help="also advise from the peak memory and CPU measured in RUN (e.g. a small pilot run)")
    p.set_defaults(func=_cmd_plan)
