"""The survey, run, science and provenance sections of the run report (drivers/report.py), as plain
data for its template: each reads the run directory through the read model (core/runstate's view,
engine/timeline's bars), summary.json, plan.json and the run_start facts, and caps what grows with
the survey (slowest units, references per type) so the page keeps its size at 12,000 units.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from typing import Any

from dream_hpc.config import PIPELINES, SurveyConfig, defaults
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import RunView
from dream_hpc.core.workunit import STAGES
from dream_hpc.drivers import report_figures as figs
from dream_hpc.stages.params import format_value

SLOWEST = 20


# --- small helpers ------------------------------------------------------------------------------
def num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def _finite(values: list[Any]) -> list[float]:
    return [x for x in (num(v) for v in values) if math.isfinite(x)]


def _stats(values: list[float]) -> dict[str, float] | None:
    import numpy as np

    if not values:
        return None
    a = np.asarray(values, float)
    return {"n": int(a.size), "min": float(a.min()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": float(a.max()), "sum": float(a.sum())}


def _seconds(iso: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(iso)).timestamp()
    except (TypeError, ValueError):
        return None


def first_line(text: str | None, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    line = lines[0] if lines else "-"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= _flat(v, key + ".")
        else:
            out[key] = v
    return out

def step_parameter_rows(cfg: SurveyConfig) -> tuple[list[dict[str, Any]], str]:
    """Every step parameter this survey runs at a non-default value (survey override or CRDS pars-*),
    as `dream-hpc params CONFIG --changed` lists them (stages/params.py)."""
    try:
        from dream_hpc.stages import params
    except Exception as e:  # noqa: BLE001 (jwst not importable here: the rest of the page stands)
        return [], f"step parameters not listed: {first_line(str(e))}"
    try:
        crds, note = params.crds_parameters(cfg)
    except Exception as e:  # noqa: BLE001
        crds, note = {}, f"pars-* not looked up ({first_line(str(e), 120)})"
    rows = []
    for pipeline in PIPELINES:
        overrides = getattr(cfg.pipeline, pipeline)
        for step, plist in params.step_parameters(pipeline).items():
            survey = overrides.get(step) or {}
            from_crds = crds.get((pipeline, step), {})
            for p in plist:
                if p.name.startswith("override_") or (p.name in params.COMMON and p.name != "skip"):
                    continue
                if p.name in survey:
                    value, source = survey[p.name], "survey config"
                elif p.name in from_crds and from_crds[p.name] != p.default:
                    value, source = from_crds[p.name], "CRDS pars-*"
                else:
                    continue
                rows.append({"pipeline": pipeline, "step": step, "param": p.name, "default": format_value(p.default),
                             "value": format_value(value), "source": source,
                             "note": params.NOTES.get((pipeline, step, p.name)) or p.comment})
    return rows, note


def config_rows(cfg: SurveyConfig) -> list[dict[str, str]]:
    """Config keys (outside pipeline.*, listed with the step parameters) that differ from the defaults."""
    mine, base = _flat(cfg.to_dict()), _flat(defaults().to_dict())
    return [{"key": k, "default": format_value(base.get(k)), "value": format_value(v)} for k, v in mine.items()
            if not k.startswith("pipeline.") and base.get(k) != v]


def survey_section(run: RunDir, view: RunView, cfg: SurveyConfig | None, cfg_source: str) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    try:
        plan = json.loads(run.plan.read_text()).get("summary", {}) if run.plan.is_file() else {}
    except (OSError, ValueError):
        plan = {}
    out: dict[str, Any] = {"plan": plan, "footprint": figs.png_uri(run.figures / "footprint.png"),
                           "config_source": cfg_source, "config_text": "", "config_rows": [], "step_rows": [],
                           "step_note": ""}
    if run.config.is_file():
        out["config_text"] = run.config.read_text(errors="replace")
    if cfg is not None:
        out["config_rows"] = config_rows(cfg)
        out["step_rows"], out["step_note"] = step_parameter_rows(cfg)
        out["survey_name"] = cfg.survey.name
    return out


def _attempts(view: RunView) -> list[dict[str, Any]]:
    out = []
    starts = view.starts
    for i, s in enumerate(starts):
        nxt = starts[i + 1]["time"] if i + 1 < len(starts) else "9999"
        end = next((e for e in view.ends if s["time"] <= e["time"] < nxt), None)
        data = s.get("data") or {}
        t0 = _seconds(s["time"])
        t1 = _seconds(end["time"] if end else (view.last_record if i + 1 == len(starts) else nxt))
        hosts = sorted(set(data.get("hosts") or [s.get("host")]))
        wall = (t1 - t0) if t0 is not None and t1 is not None else float("nan")
        out.append({"number": data.get("attempt", i + 1), "start": s["time"], "end": end["time"] if end else None,
                    "status": (end["data"].get("status") if end else "no run_end"),
                    "launcher": data.get("launcher", "?"), "mpi_size": data.get("mpi_size", 1),
                    "hosts": hosts, "wall_s": wall, "node_hours": wall * max(1, len(hosts)) / 3600.0,
                    "argv": " ".join(map(str, data.get("argv") or []))})
    return out


def run_section(run: RunDir, view: RunView, plan: dict[str, Any]) -> dict[str, Any]:
    from dream_hpc.engine.timeline import collect

    values: dict[str, dict[str, list[float]]] = {s: {m: [] for m, _ in figs.METRICS} for s in STAGES}
    totals = []
    for u in view.units.values():
        for s, d in u.stages.items():
            if s in values:
                for m, _ in figs.METRICS:
                    x = num(d.get(m))
                    if math.isfinite(x):
                        values[s][m].append(x)
        if u.stages:
            plan_u = view.planned.get(u.unit_id, {})
            walls = {s: num(u.stages[s].get("wall_s")) for s in STAGES if s in u.stages}
            totals.append({"unit": u.unit_id, "status": u.status, "filter": plan_u.get("filter", "?"),
                           "detector": plan_u.get("detector", "?"), "wall_s": sum(_finite(list(walls.values()))),
                           "stages": walls, "peak_rss_mb": max(_finite([d.get("peak_rss_mb") for d in
                                                                        u.stages.values()]) or [float("nan")]),
                           "rank": u.rank, "host": u.host, "est_cpu_s": num(plan_u.get("est_cpu_s"))})
    table = []
    for s in STAGES:
        row = {"stage": s}
        for m, _ in figs.METRICS:
            row[m] = _stats(values[s][m])
        if any(row[m] for m, _ in figs.METRICS):
            table.append(row)
    slowest = sorted(totals, key=lambda t: -t["wall_s"])[:SLOWEST]
    labels, bars, _ = collect(run, view.model)
    n_fail = sum(b.mark in ("failed", "timeout") for b in bars)
    title = (f"{len({b.unit for b in bars if not b.unit.startswith('mosaic')})} units on {len(labels)} rank rows; "
             f"{n_fail} failed or timed out")
    attempts = _attempts(view)
    cpu_units = sum(sum(values[s]["cpu_s"]) for s in STAGES)
    mosaics = []
    for name, m in sorted(view.mosaics.items()):
        extra = (m.data or {}).get("extra", {})
        mosaics.append({"filter": name, "status": m.status, "n_inputs": extra.get("n_inputs"),
                        "wall_s": num(extra.get("wall_s")), "step": m.step})
    cpu_mosaic = 0.0  # the mosaic records' CPU is not in the status view; Image3 wall time is shown per filter
    node = plan.get("node") or {}
    hours = plan.get("cpu_hours") or {}
    budget = {
        "node_hours_used": sum(a["node_hours"] for a in attempts if math.isfinite(a["node_hours"])),
        "node_hours_plan": node.get("node_hours"), "ranks_per_node": node.get("ranks_per_node"),
        "cpu_hours_used": (cpu_units + cpu_mosaic) / 3600.0,
        "cpu_hours_plan": num(hours.get("total")) + num(plan.get("image3_cpu_hours") or 0.0)
        if hours else None,
        "cpu_hours_plan_units": hours.get("total"),
    }
    return {"timeline": figs.timeline_uri(labels, bars, title), "distributions": figs.distributions_uri(values),
            "table": table, "slowest": slowest, "n_with_times": len(totals), "attempts": attempts,
            "budget": budget, "mosaics": mosaics, "metrics": figs.METRICS}


def science_section(run: RunDir, view: RunView, summary: dict[str, Any] | None) -> dict[str, Any]:
    from dream_hpc.stages import science as sc

    thresholds = [
        ("completeness", f">= {sc.MIN_COMPLETENESS:.0%}", f"of bright (predicted S/N > {sc.SNR_MIN:.0f}), isolated "
         f"({sc.ISOLATION_RADIUS_ARCSEC:g}\" / {sc.ISOLATION_DMAG:g} mag) input sources, matched within "
         f"{sc.MATCH_RADIUS_ARCSEC:g}\""),
        ("astrometry", f"|median offset| <= {sc.MAX_OFFSET_PX:g} px, robust scatter <= {sc.MAX_SCATTER_PX:g} px",
         "per axis, mosaic pixels, output - input position; the offset limit adds, in quadrature, 3 sigma of the "
         "absolute fit's own error (RMS / sqrt(2 matches))"),
        ("photometry", f"|median residual| <= {sc.MAX_MAG_RESIDUAL:g} mag",
         f"aper_total_abmag - input, stars when >= {sc.MIN_STARS_FOR_HEADLINE} are matched, else all sources"),
    ]
    entries = (summary or {}).get("mosaics", {})
    filters = sorted(set(entries) | {k.upper() for k in view.mosaics}
                     | set(((json.loads(run.plan.read_text()).get("summary", {}) if run.plan.is_file() else {})
                            .get("filters")) or []))
    rows = []
    for filt in filters:
        e = entries.get(filt) or {}
        m = view.mosaics.get(filt) or view.mosaics.get(filt.lower())
        status = m.status if m else "pending"
        row: dict[str, Any] = {"filter": filt, "status": status, "made": status == "done" and "error" not in e,
                               "error": first_line(e.get("error") or (m.error if m else "")) if status != "done" or
                               "error" in e else "", "entry": e}
        if row["made"]:
            preview = e.get("preview") or ((m.data or {}).get("extra", {}).get("preview") if m else None)
            row["preview"] = figs.png_uri(run.root / preview, max_width=900) if preview else None
            row["figure"] = figs.png_uri(run.root / e["science_figure"]) if e.get("science_figure") else None
            s = e.get("science")
            row["science"] = s
            row["science_error"] = e.get("science_error")
            row["tweakreg"] = e.get("tweakreg") or ((m.data or {}).get("extra", {}).get("tweakreg") if m else None)
            row["completeness_figure"] = (figs.completeness_uri(filt, s.get("completeness_by_mag") or [])
                                          if s else None)
            row["ok"] = bool(s) and all((s.get("passed") or {}).values())
        rows.append(row)
    return {"thresholds": thresholds, "rows": rows, "have_summary": summary is not None}


def _lock_pins(text: str) -> dict[str, str]:
    from dream_hpc.core.versions import normalize

    pins = {}
    for line in text.splitlines():
        name, sep, rest = line.strip().partition("==")
        if sep and name and not name.startswith("#"):
            pins[normalize(name)] = rest.split()[0].rstrip("\\").split(";")[0]
    return pins


def provenance_section(run: RunDir, view: RunView, cfg: SurveyConfig | None) -> dict[str, Any]:
    from dream_hpc.core.versions import KEY_PACKAGES, mismatches

    info = view.starts[-1]["data"] if view.starts else {}
    packages = info.get("packages") or {}
    pins = _lock_pins(info.get("lock_text") or "")
    key = [{"name": n, "recorded": packages.get(n, "-"), "locked": pins.get(n, "-"),
            "ok": pins.get(n) is None or packages.get(n) == pins.get(n)} for n in KEY_PACKAGES]
    drift = mismatches(pins, packages) if pins else []
    refs: dict[str, Counter] = {}
    used = [d.get("refs") or {} for u in view.units.values() for d in u.stages.values()]
    used += [(m.data or {}).get("refs") or {} for m in view.mosaics.values()]
    for stage_refs in used:
        for rtype, name in stage_refs.items():
            if rtype != "crds_context":  # Mirage's per-file keys (cosmic_ray_path[file]) count as one type
                refs.setdefault(rtype.split("[", 1)[0], Counter())[str(name)] += 1
    ref_rows = [{"type": t, "files": c.most_common(6), "more": max(0, len(c) - 6), "uses": sum(c.values())}
                for t, c in sorted(refs.items())]
    seeds = [{"unit": uid, "seeds": p.get("seeds") or {}} for uid, p in list(view.planned.items())[:5]]
    digest, digest_note = "", ""
    if run.provenance.is_file():
        from dream_hpc.provenance.read import ProvenanceError, load

        try:
            prov = load(run.provenance)
            digest = str(prov["root"].get("journal_digest", ""))
            digest_note = f"from {run.rel(run.provenance)} ({len(prov['attempts'])} attempt(s))"
        except (ProvenanceError, OSError, KeyError) as e:
            digest_note = f"provenance.h5 unreadable: {first_line(str(e))}"
    else:
        digest_note = "no provenance.h5 yet"
    journal_files = sorted(p.name for p in run.journal.glob("rank*.jsonl")) if run.journal.is_dir() else []
    dream = info.get("dream_hpc") or {}
    return {
        "dream_hpc": dream, "python": info.get("python", "?"), "platform": info.get("platform", "?"),
        "key_packages": key, "drift": drift[:20], "drift_more": max(0, len(drift) - 20), "n_packages": len(packages),
        "lock_path": info.get("lock_path", "?"), "lock_sha256": info.get("lock_sha256", ""),
        "container": info.get("container") or {}, "crds": info.get("crds") or {},
        "mirage_data": info.get("mirage_data") or {}, "catalog": info.get("catalog") or {},
        "slurm": info.get("slurm") or {}, "reproduce": info.get("reproduce"),
        "config_sha256": info.get("config_sha256", ""), "refs": ref_rows,
        "survey_seed": cfg.survey.seed if cfg else None, "seeds": seeds, "n_planned": len(view.planned),
        "journal_digest": digest, "digest_note": digest_note, "journal_files": len(journal_files),
        "reproduce_cmd": f"dream-hpc reproduce {run.root / 'provenance.h5'} --out {run.root.parent / (run.root.name + '-reproduced')}",
    }
