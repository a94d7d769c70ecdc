"""Ranks-per-node and node-hours advice from the peak memory and CPU a run measured (`plan --measured RUN`).

A unit's memory and time are set by its "kind": channel, subarray and readout (pattern, groups,
integrations). Each kind of the plan that the measured run (e.g. a small pilot of the same readout)
covered gets its measured peak (the largest, plus a safety margin) and median CPU; a kind it did not
cover gets the cost model's estimate scaled by the measured/model ratio (largest for memory, median
for CPU: "scaled").
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream_hpc.core.errors import UserError
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import cost

# Why a margin: another field's unit holds other sources and cosmic rays, and the pilot saw few units.
PEAK_MARGIN = 0.10

Kind = tuple[str, str, str, int, int]  # (channel, subarray, readpatt, ngroups, nints)


def unit_kind(u: WorkUnit) -> Kind:
    return (u.channel, u.subarray, u.readpatt, u.ngroups, u.nints)


def kind_label(k: Kind) -> str:
    channel, subarray, readpatt, ngroups, nints = k
    return f"{'SW' if channel == 'SHORT' else 'LW'} {subarray} {readpatt} {ngroups}g x {nints}i"


@dataclass
class Sample:
    """One measured unit beside the cost model's estimate for it."""

    kind: Kind
    peak_mb: float
    cpu_s: float
    model_peak_mb: float
    model_cpu_s: float


def measured_samples(run_path: str | Path) -> tuple[list[Sample], int]:
    """The finished units of RUN with a recorded peak memory, and how many other units were left out."""
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.core.runstate import measured_unit_costs, read_plan

    root = Path(run_path)
    if not (root / "journal").is_dir():
        raise UserError(f"--measured {root}: not a dream-hpc run directory (no journal/); give the --out of a run "
                        f"or run some units first: dream-hpc run CONFIG --out {root}")
    run = RunDir(root.resolve())
    costs, planned = measured_unit_costs(run), read_plan(run)
    usable = {uid: c for uid, c in costs.items() if c["complete"] and c["peak_rss_mb"] > 0 and uid in planned}
    if not usable:
        raise UserError(f"--measured {root}: {_why_nothing(root, costs, planned)}")
    units = [WorkUnit.from_dict(planned[uid]) for uid in usable]
    cost.annotate(units)  # today's model, so the ratios compare like with like
    samples = [Sample(unit_kind(u), c["peak_rss_mb"], c["cpu_s"], u.est_mem_mb, u.est_cpu_s)
               for u, c in zip(units, usable.values(), strict=True)]
    return samples, len(costs) - len(usable)


def _why_nothing(root: Path, costs: dict[str, Any], planned: dict[str, Any]) -> str:
    """Why RUN measured nothing usable, and the fix."""
    if not costs:
        return f"no unit has finished a stage there; run some units first: dream-hpc run CONFIG --out {root}"
    if not planned:
        return (f"its plan.json is missing or unreadable, so the measured units' readouts are unknown; "
                f"rerun: dream-hpc run CONFIG --out {root}")
    if not any(c["peak_rss_mb"] > 0 for c in costs.values()):
        return ("its journal records no peak memory (written by an older dream-hpc); run some units again into a "
                "new run directory: dream-hpc run CONFIG --out NEW_RUN (a small pilot of the same readout will do)")
    return f"no unit finished all its stages there; run some units first: dream-hpc run CONFIG --out {root}"


def _ratio(samples: list[Sample], measured: str, model: str, pick: Any = statistics.median) -> float:
    return pick(getattr(s, measured) / max(getattr(s, model), 1e-9) for s in samples)


def _kind_row(kind: Kind, units: list[WorkUnit], seen: list[Sample], ratios: dict[str, float],
              margin: float) -> dict[str, Any]:
    """Per-unit peak MB and CPU seconds of one kind: measured if the run covered it, else scaled model."""
    model_peak = max(u.est_mem_mb for u in units)
    model_cpu = statistics.median(u.est_cpu_s for u in units)
    if seen:
        peak, cpu, source = max(s.peak_mb for s in seen), statistics.median(s.cpu_s for s in seen), "measured"
    else:
        peak, cpu, source = model_peak * ratios["mem"], model_cpu * ratios["cpu"], "scaled"
    return {"kind": kind_label(kind), "source": source, "units": len(units), "measured_units": len(seen),
            "peak_mb": round(peak * (1.0 + margin)), "cpu_s": round(cpu, 1),
            "model_peak_mb": round(model_peak), "model_cpu_s": round(model_cpu, 1)}


def measured_advice(units: list[WorkUnit], run_path: str | Path, node_mem_gb: float, node_cores: int,
                    margin: float = PEAK_MARGIN) -> dict[str, Any]:
    """Ranks per node and node-hours for `units` (annotated by the cost model) from RUN's measurements."""
    samples, left_out = measured_samples(run_path)
    # Memory scales by the largest ratio: a rank must hold its worst unit (a rank's first unit of a
    # readout also prepares the dark, so it peaks well above the ones after it); CPU by the median.
    ratios = {"mem": _ratio(samples, "peak_mb", "model_peak_mb", max), "cpu": _ratio(samples, "cpu_s", "model_cpu_s")}
    by_kind: dict[Kind, list[WorkUnit]] = {}
    for u in units:
        by_kind.setdefault(unit_kind(u), []).append(u)
    rows = [_kind_row(k, us, [s for s in samples if s.kind == k], ratios, margin) for k, us in by_kind.items()]
    worst = max((r["peak_mb"] for r in rows), default=0.0)
    ranks = cost.ranks_per_node(worst, node_mem_gb, node_cores)
    cpu_total = sum(r["cpu_s"] * r["units"] for r in rows)
    return {"run": str(Path(run_path).resolve()), "units_measured": len(samples), "units_left_out": left_out,
            "margin": margin, "ratio_to_model": {k: round(v, 3) for k, v in ratios.items()}, "kinds": rows,
            "unit_peak_mem_mb": worst, "cpu_hours": round(cpu_total / 3600.0, 3), "ranks_per_node": ranks,
            "node_hours": round(cpu_total / 3600.0 / ranks, 2) if ranks else None}


def format_measured(m: dict[str, Any], model: dict[str, Any]) -> str:
    """The measured advice beside the model's, one line per kind saying measured or scaled."""
    left = f", {m['units_left_out']} left out (unfinished or no memory recorded)" if m["units_left_out"] else ""
    r = m["ratio_to_model"]
    lines = [f"measured in {m['run']}: {m['units_measured']} finished units{left}; measured/model: "
             f"memory x{r['mem']:.2f} (largest), CPU x{r['cpu']:.2f} (median); peaks + {m['margin']:.0%} margin"]
    for k in m["kinds"]:
        how = (f"measured on {k['measured_units']}" if k["source"] == "measured"
               else "scaled (not in the measured run: model x those ratios)")
        lines.append(f"  {k['kind']}: {k['units']} units, {how}: {k['peak_mb'] / 1024:.2f} GiB, {k['cpu_s']:.0f} "
                     f"CPU-s per unit (model {k['model_peak_mb'] / 1024:.2f} GiB, {k['model_cpu_s']:.0f} CPU-s)")
    n = model["node"]
    said = (f"the model said {model['unit_peak_mem_mb'] / 1024:.2f} GiB per unit -> {n['ranks_per_node']} ranks"
            + (f", ~{n['node_hours']:.2f} node-hours" if n["node_hours"] is not None else ""))
    if m["ranks_per_node"]:
        lines.append(f"advice (measured): {m['unit_peak_mem_mb'] / 1024:.2f} GiB per unit -> {m['ranks_per_node']} "
                     f"ranks per node ({n['cores']} cores, {n['mem_gb']:g} GB), ~{m['node_hours']:.2f} node-hours "
                     f"({m['cpu_hours']:.2f} CPU-hours); {said}")
    else:
        lines.append(f"advice (measured): one unit needs {m['unit_peak_mem_mb'] / 1024:.2f} GiB, more than a "
                     f"{n['mem_gb']:g} GB node allows: use bigger nodes or fewer groups; {said}")
    return "\n".join(lines)
