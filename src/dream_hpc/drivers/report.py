"""`RUN/report.html`: one self-contained page per run, for the people who judge it.

The simulator, the imaging team deciding whether to use the mosaics and whoever pays the
node-hours open one file (from the cluster, or a copied run directory, offline) and see: the
verdict and every failure with its log, the survey and its non-default parameters, how the run
went (timeline, per-stage distributions, node-hours against the plan), the science check per
filter against its thresholds, and the provenance needed to cite and reproduce it.

Every fact is read back from the run directory through the one read model (core/runstate.read_run,
core/runmodel via engine/timeline.collect, provenance/read and provenance/audit), never from the
process that computed it, so the page of a run in progress shows what its journal holds so far and
says so. The page is rendered from a Jinja2 template (templates/report.html.j2); images are PNG data
URIs (drivers/report_figures.py) and there is no script, font or stylesheet to fetch. Tables that
grow with the survey are capped (failures, slowest units, log excerpts) and distributions are
figures, so a 12,000-unit run gives a page of the same size as a 24-unit one (bench/bench_report.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from dream_hpc import __version__
from dream_hpc.config import PIPELINES, SurveyConfig, defaults, load_config, parse_config
from dream_hpc.core.rundir import RunDir, RunDirError, atomic_write_text
from dream_hpc.core.runstate import RunView, fmt_duration, read_run
from dream_hpc.core.workunit import STAGES
from dream_hpc.drivers import report_figures as figs

FILENAME = "report.html"
MAX_FAILURES = 50  # failure rows shown; the rest are counted ("and N more")
MAX_LOGS = 20  # log excerpts embedded (for the first failures shown)
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16000
SLOWEST = 20
MAX_PROBLEMS = 30
BAD = ("failed", "timeout", "interrupted")


# --- small helpers ------------------------------------------------------------------------------
def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def _finite(values: list[Any]) -> list[float]:
    return [x for x in (_num(v) for v in values) if math.isfinite(x)]


def _stats(values: list[float]) -> dict[str, float] | None:
    import numpy as np

    if not values:
        return None
    a = np.asarray(values, float)
    return {"n": int(a.size), "min": float(a.min()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": float(a.max()), "sum": float(a.sum())}


def _fmt(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return repr(value) if value == "" or " " in value else value
    return str(value)


def _seconds(iso: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(iso)).timestamp()
    except (TypeError, ValueError):
        return None


def _first_line(text: str | None, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    line = lines[0] if lines else "-"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _anchor(name: str) -> str:
    return "log-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
    """The end of a log: from its last traceback's first line when that is in the last `max_bytes`
    (the whole error, as the unit log records it), else its last `lines` lines; None without a log."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    all_lines = text.splitlines()
    if size > max_bytes and all_lines:
        all_lines = all_lines[1:]  # a line cut by the byte limit
    starts = [i for i, ln in enumerate(all_lines) if ln.startswith("Traceback (most recent call last)")]
    first = max(0, starts[-1] - 3) if starts else max(0, len(all_lines) - lines)
    tail = all_lines[first:]
    if first > 0 or size > max_bytes:
        tail.insert(0, "…")
    return "\n".join(tail)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= _flat(v, key + ".")
        else:
            out[key] = v
    return out


# --- the run's state ----------------------------------------------------------------------------
def run_state(view: RunView) -> tuple[str, str]:
    """(state, sentence): finished | running | interrupted | not started, as `dream-hpc status` says it."""
    if not view.starts:
        return "not started", "no run_start record yet: nothing has run"
    last = view.starts[-1]["time"]
    ended = [e for e in view.ends if e["time"] >= last]
    if view.running:
        return "running", (f"IN PROGRESS: ranks are still writing the journal ({len(view.live_files)} live journal "
                           f"file(s)); this page shows what was known at its last record ({view.last_record}). "
                           "Regenerate it with `dream-hpc report RUN`.")
    if not ended:
        return "interrupted", ("INCOMPLETE: the latest attempt has no run_end record (killed, crashed or still "
                               f"starting); this page shows the journal up to {view.last_record}. Rerun the same "
                               "command to resume.")
    return "finished", f"finished with status {ended[-1]['data'].get('status', '?')} at {ended[-1]['time']}"


def load_run_config(run: RunDir, view: RunView) -> tuple[SurveyConfig | None, str]:
    """The run's config: the file it was run from if it is still there unchanged (its relative paths
    then resolve), else RUN/config.yaml (the copy kept with the run)."""
    info = view.starts[-1]["data"] if view.starts else {}
    original = Path(str(info.get("config_path") or ""))
    if info.get("config_path") and original.is_file():
        try:
            cfg = load_config(original)
            if cfg.sha256 == info.get("config_sha256"):
                return cfg, str(original)
        except Exception:  # noqa: S110 (edited since: fall back to the run's own copy)
            pass
    if run.config.is_file():
        try:
            return parse_config(run.config.read_text(), run.config), run.rel(run.config)
        except Exception as e:
            return None, f"{run.config}: {_first_line(str(e))}"
    return None, f"{run.config}: not found"


# --- sections -------------------------------------------------------------------------------------
def failures(run: RunDir, view: RunView) -> dict[str, Any]:
    rows = []
    for u in sorted((u for u in view.units.values() if u.status in BAD),
                    key=lambda u: (STAGES.index(u.stage) if u.stage in STAGES else 9, u.unit_id)):
        log = u.log or run.rel(run.logs / f"{u.unit_id}.log")
        rows.append({"unit": u.unit_id, "status": u.status, "stage": u.stage or "-", "step": u.step or "-",
                     "error": _first_line(u.error or ("interrupted: its rank stopped writing" if
                                                      u.status == "interrupted" else "-")),
                     "log": log, "anchor": _anchor(u.unit_id)})
    for name, m in sorted(view.mosaics.items()):
        if m.status in ("failed", "interrupted"):
            rows.append({"unit": f"mosaic {name}", "status": m.status, "stage": "image3", "step": m.step or "-",
                         "error": _first_line(m.error or m.status), "log": run.rel(run.logs / f"mosaic_{name}.log"),
                         "anchor": _anchor(f"mosaic-{name}")})
    # many failures usually share a cause: one line per (status, stage, step, error kind) first
    groups = Counter((r["status"], r["stage"], r["step"], r["error"].split(":", 1)[0][:80]) for r in rows)
    by_cause = [{"status": s, "stage": st, "step": sp, "kind": k, "n": n} for (s, st, sp, k), n in groups.most_common(12)]
    shown = rows[:MAX_FAILURES]
    logs = []
    for r in shown[:MAX_LOGS]:
        try:  # a log path from the journal: never read outside the run directory
            text = log_tail(run.inside(r["log"]))
        except RunDirError:
            text = None
        r["has_log"] = text is not None
        if text is not None:  # (a blocked mosaic never started, so it has no log)
            logs.append({"anchor": r["anchor"], "unit": r["unit"], "log": r["log"], "text": text})
    for r in shown[MAX_LOGS:]:
        r["has_log"] = False
    return {"rows": shown, "n": len(rows), "more": len(rows) - len(shown), "logs": logs, "by_cause": by_cause,
            "causes_more": max(0, len(groups) - len(by_cause)),
            "logs_more": max(0, len(shown) - MAX_LOGS)}


def audit_status(run: RunDir, state: str, verify_products: bool) -> dict[str, Any]:
    """The audit of provenance.h5 (record against journal; products too with `verify_products`)."""
    if state in ("running", "not started"):
        return {"status": "not run", "ok": None, "why": "the run is in progress; audit it when it has ended "
                "(`dream-hpc audit RUN`)", "problems": []}
    if not run.provenance.is_file():
        return {"status": "not run", "ok": None, "problems": [],
                "why": "no provenance.h5 yet (built at the end of `survey`/`mosaic`, or by `dream-hpc provenance RUN`)"}
    from dream_hpc.provenance.audit import audit, capped
    from dream_hpc.provenance.read import ProvenanceError

    try:
        result = audit(run.provenance, verify_products=verify_products)
    except (ProvenanceError, OSError) as e:
        return {"status": "error", "ok": False, "why": _first_line(str(e)), "problems": []}
    problems = capped(result.problems)
    checked = (f"{result.n_products_ok}/{result.n_products} products match their sha256" if verify_products
               else "record and journal checked; products not re-hashed (`dream-hpc audit RUN` does)")
    return {"status": "OK" if not result.problems else f"FAILED ({len(result.problems)} problem(s))",
            "ok": not result.problems, "why": checked, "problems": problems[:MAX_PROBLEMS],
            "problems_more": max(0, len(problems) - MAX_PROBLEMS), "notes": result.notes[:10]}


def step_parameter_rows(cfg: SurveyConfig) -> tuple[list[dict[str, Any]], str]:
    """Every step parameter this survey runs at a non-default value (survey override or CRDS pars-*),
    as `dream-hpc params CONFIG --changed` lists them (stages/params.py)."""
    try:
        from dream_hpc.stages import params
    except Exception as e:  # noqa: BLE001 (jwst not importable here: the rest of the page stands)
        return [], f"step parameters not listed: {_first_line(str(e))}"
    try:
        crds, note = params.crds_parameters(cfg)
    except Exception as e:  # noqa: BLE001
        crds, note = {}, f"pars-* not looked up ({_first_line(str(e), 120)})"
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
                rows.append({"pipeline": pipeline, "step": step, "param": p.name, "default": _fmt(p.default),
                             "value": _fmt(value), "source": source,
                             "note": params.NOTES.get((pipeline, step, p.name)) or p.comment})
    return rows, note


def config_rows(cfg: SurveyConfig) -> list[dict[str, str]]:
    """Config keys (outside pipeline.*, listed with the step parameters) that differ from the defaults."""
    mine, base = _flat(cfg.to_dict()), _flat(defaults().to_dict())
    return [{"key": k, "default": _fmt(base.get(k)), "value": _fmt(v)} for k, v in mine.items()
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
                    x = _num(d.get(m))
                    if math.isfinite(x):
                        values[s][m].append(x)
        if u.stages:
            plan_u = view.planned.get(u.unit_id, {})
            walls = {s: _num(u.stages[s].get("wall_s")) for s in STAGES if s in u.stages}
            totals.append({"unit": u.unit_id, "status": u.status, "filter": plan_u.get("filter", "?"),
                           "detector": plan_u.get("detector", "?"), "wall_s": sum(_finite(list(walls.values()))),
                           "stages": walls, "peak_rss_mb": max(_finite([d.get("peak_rss_mb") for d in
                                                                        u.stages.values()]) or [float("nan")]),
                           "rank": u.rank, "host": u.host, "est_cpu_s": _num(plan_u.get("est_cpu_s"))})
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
                        "wall_s": _num(extra.get("wall_s")), "step": m.step})
    cpu_mosaic = 0.0  # the mosaic records' CPU is not in the status view; Image3 wall time is shown per filter
    node = plan.get("node") or {}
    hours = plan.get("cpu_hours") or {}
    budget = {
        "node_hours_used": sum(a["node_hours"] for a in attempts if math.isfinite(a["node_hours"])),
        "node_hours_plan": node.get("node_hours"), "ranks_per_node": node.get("ranks_per_node"),
        "cpu_hours_used": (cpu_units + cpu_mosaic) / 3600.0,
        "cpu_hours_plan": _num(hours.get("total")) + _num(plan.get("image3_cpu_hours") or 0.0)
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
         "per axis, mosaic pixels, output - input position"),
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
                               "error": _first_line(e.get("error") or (m.error if m else "")) if status != "done" or
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
            digest_note = f"provenance.h5 unreadable: {_first_line(str(e))}"
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


def verdict(view: RunView, state: str, fails: dict[str, Any], science: dict[str, Any],
            audit: dict[str, Any]) -> dict[str, Any]:
    counts = Counter(u.status for u in view.units.values())
    reasons = []
    if state != "finished":
        reasons.append(f"the run is {state}")
    for status in ("failed", "timeout", "interrupted"):
        if counts.get(status):
            reasons.append(f"{counts[status]} unit(s) {'timed out' if status == 'timeout' else status}")
    not_yet = counts.get("pending", 0) + counts.get("running", 0)
    if not_yet:
        reasons.append(f"{not_yet} unit(s) not finished")
    made = [r for r in science["rows"] if r["made"]]
    if len(made) < len(science["rows"]):
        reasons.append(f"{len(science['rows']) - len(made)} of {len(science['rows'])} mosaic(s) not made")
    bad_science = [r["filter"] for r in made if not r.get("ok")]
    if bad_science:
        reasons.append(f"science check not passed: {', '.join(bad_science)}")
    if audit["ok"] is False:
        reasons.append(f"audit {audit['status']}")
    if view.problems:
        reasons.append(f"{len(view.problems)} journal record(s) fail their hash")
    level = "ok" if not reasons else ("progress" if state in ("running", "not started") and not fails["n"]
                                      else "bad")
    return {"level": level, "headline": {"ok": "GOOD: every unit, mosaic and check passed",
                                         "progress": "IN PROGRESS", "bad": "NEEDS ATTENTION"}[level],
            "reasons": reasons, "counts": {k: counts.get(k, 0) for k in
                                           ("done", "failed", "timeout", "interrupted", "running", "pending")},
            "n_units": len(view.units), "n_mosaics_made": len(made), "n_mosaics": len(science["rows"]),
            "science_ok": [r["filter"] for r in made if r.get("ok")], "science_bad": bad_science}


# --- the page ---------------------------------------------------------------------------------
def build_context(run: RunDir, cfg: SurveyConfig | None = None, verify_products: bool = False) -> dict[str, Any]:
    """Everything the template shows, read from the run directory."""
    view = read_run(run)
    state, state_line = run_state(view)
    cfg_source = "given by the caller"
    if cfg is None:
        cfg, cfg_source = load_run_config(run, view)
    summary = None
    if run.summary.is_file():
        try:
            summary = json.loads(run.summary.read_text())
        except (OSError, ValueError):
            summary = None
    survey = survey_section(run, view, cfg, cfg_source)
    fails = failures(run, view)
    science = science_section(run, view, summary)
    audit = audit_status(run, state, verify_products)
    return {
        "title": f"{(cfg.survey.name if cfg else survey['plan'].get('survey')) or 'dream-hpc run'}: {run.root.name}",
        "run_dir": str(run.root), "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": __version__, "state": state, "state_line": state_line, "last_record": view.last_record,
        "verdict": verdict(view, state, fails, science, audit), "failures": fails, "audit": audit,
        "journal_problems": view.problems[:MAX_PROBLEMS], "survey": survey,
        "run": run_section(run, view, survey["plan"]), "science": science,
        "provenance": provenance_section(run, view, cfg), "summary_wall_s": (summary or {}).get("wall_s"),
    }


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("dream_hpc.drivers", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)

    def num(v: Any, fmt: str = "{:.1f}") -> str:
        x = _num(v)
        return fmt.format(x) if math.isfinite(x) else "–"

    env.filters["num"] = num
    env.filters["dur"] = lambda v: fmt_duration(_num(v)) if math.isfinite(_num(v)) else "–"
    env.filters["short"] = lambda v, n=12: (str(v)[:n] if v else "–")
    return env


def render(ctx: dict[str, Any]) -> str:
    return _environment().get_template("report.html.j2").render(**ctx)


def write_report(run: RunDir | str | Path, cfg: SurveyConfig | None = None, out: str | Path | None = None,
                 verify_products: bool = False) -> Path:
    """Render RUN/report.html (or `out`), atomically; returns its path."""
    run = run if isinstance(run, RunDir) else RunDir(Path(run).resolve())
    html = render(build_context(run, cfg, verify_products))
    path = Path(out) if out else run.root / FILENAME
    atomic_write_text(path, html)
    return path


def write_quietly(run: RunDir, cfg: SurveyConfig | None = None) -> Path | None:
    """write_report for the end of `survey`/`mosaic`: a report that cannot be made is one warning
    line (the run's products and summary stand), never a failed run."""
    import sys

    try:
        return write_report(run, cfg)
    except Exception as e:  # noqa: BLE001
        print(f"warning: {run.root / FILENAME} not written ({type(e).__name__}: {_first_line(str(e))}); "
              f"try `dream-hpc report {run.root}`", file=sys.stderr)
        return None
