"""What a plan amounts to: size, CPU-hours, memory per unit, advice per node (`dream-hpc plan`), plan.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import cost
from dream_hpc.plan.figure import _centre, _outlines
from dream_hpc.plan.pointings import PlanError


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
    brightest = (cfg.pipeline.image3.get("tweakreg") or {}).get("brightest")  # None: jwst's default
    for filt, f in sorted(by_filter.items()):
        out_pix = area.get(f["channel"], 0.0) / cost.PIXEL_SCALE[f["channel"]] ** 2
        c = cost.units_image3_cost(f["units"], out_pix, brightest)
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
        from dream_hpc.plan.measured import measured_advice

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


def write_plan(path: str | Path, units: list[WorkUnit], summary: dict) -> Path:
    """plan.json: the summary and every unit; refuses to replace a different plan already there."""
    from dream_hpc.core.rundir import atomic_write_text

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
    """The work units recorded in plan.json (written by `write_plan`)."""
    from dream_hpc.core.runstate import plan_entries

    if not Path(path).is_file():
        raise FileNotFoundError(2, "plan not found", str(path))
    return [WorkUnit.from_dict(d) for d in plan_entries(Path(path)).values()]


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
        from dream_hpc.plan.measured import format_measured

        lines.append(format_measured(s["measured"], s))
    return "\n".join(lines)
