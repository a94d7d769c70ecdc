"""`dream-hpc survey CONFIG --out RUN`: a whole survey, serially, on one machine.

Validate the config and the catalog (one clear line before any compute), plan, then per unit
simulate -> detector1 -> image2 with a progress display, then Image3 per filter, the science
check, `summary.json` and PNG previews. A failing unit is recorded and the others go on.
`run_unit` is the whole per-unit chain: the MPI engine runs the same function on its ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.cli import UserError
from dream_hpc.config import SurveyConfig, load_config
from dream_hpc.journal import JournalWriter
from dream_hpc.rundir import RunDir, atomic_write_text, sha256_file
from dream_hpc.stages import STAGES, StageContext, StageResult, product_path, run_stage
from dream_hpc.workunit import WorkUnit


# --- before any compute ----------------------------------------------------------------------
def prepare(config_path: str | Path) -> SurveyConfig:
    """Load and validate the config, then make this process offline: CRDS serverless read-only,
    MIRAGE_DATA, one BLAS thread, no sockets. Must run before crds/jwst/mirage are imported."""
    from dream_hpc import offline

    cfg = load_config(config_path)
    crds_path = cfg.resolve(cfg.references.crds_path)
    mirage_data = cfg.resolve(cfg.references.mirage_data)
    for what, path, key in (("CRDS cache", crds_path, "crds_path"), ("MIRAGE_DATA", mirage_data, "mirage_data")):
        if not path.is_dir():
            raise UserError(f"references.{key}: {what} {path} does not exist (build the reference kit with "
                            "`make kit`, or point the config at one)")
    offline.configure(crds_path, cfg.references.context, mirage_data, readonly=True, threads=1)
    offline.forbid_network()
    from dream_hpc.params import validate_step_overrides

    validate_step_overrides(cfg)
    return cfg


def plan_and_check(cfg: SurveyConfig) -> tuple[list[WorkUnit], Any]:
    """The work units and the catalog check (counts on the footprint); refuses an empty footprint."""
    from dream_hpc import catalog
    from dream_hpc.plan import make_plan

    units = make_plan(cfg)
    if not units:
        raise UserError("the plan has no work units (check pointings and instrument)")
    check = catalog.check_catalog(cfg, units)  # one-line CatalogError if missing, unreadable or off-footprint
    check_references(cfg, units)
    return units, check


def check_references(cfg: SurveyConfig, units: list[WorkUnit]) -> None:
    """Every reference and kit file the units need exists, checked once per kind of exposure:
    a missing dark or flat is one line now, not the same failure in every unit later."""
    from dream_hpc import cache, refkit, simulate

    seen: set[tuple] = set()
    for unit in units:
        kind = (unit.detector, unit.filter, unit.pupil, unit.subarray, unit.readpatt, unit.ngroups, unit.nints,
                unit.date_obs)
        if kind in seen:
            continue
        seen.add(kind)
        refkit.mirage_paths(cfg.resolve(cfg.references.mirage_data), unit.detector, unit.filter, unit.readpatt,
                            unit.ngroups)
        simulate.mirage_references(unit)
        cache.best_references(unit)  # everything the three pipelines will look up


# --- progress --------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """One status line: units done/failed, current unit, stage, step, elapsed, ETA.

    On a terminal the line is redrawn in place; otherwise one line per finished stage is printed
    (log files and CI stay readable).
    """

    total: int
    quiet: bool = False
    stream: Any = field(default_factory=lambda: sys.stdout)
    done: int = 0
    failed: int = 0
    unit: str = ""
    stage: str = ""
    step: str = ""
    start: float = field(default_factory=time.monotonic)
    unit_times: list[float] = field(default_factory=list)

    @property
    def tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def eta(self) -> str:
        remaining = self.total - self.done - self.failed
        if not self.unit_times or remaining <= 0:
            return "--:--:--" if remaining > 0 else _clock(0)
        return _clock(sum(self.unit_times) / len(self.unit_times) * remaining)

    def line(self) -> str:
        n = self.done + self.failed
        where = f"{self.unit} {self.stage}{(':' + self.step) if self.step else ''}" if self.unit else ""
        return (f"[{n}/{self.total} units, {self.failed} failed] {where}  elapsed "
                f"{_clock(time.monotonic() - self.start)}  ETA {self.eta()}")

    def show(self, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        elif final:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()

    def event(self, kind: str, **data: Any) -> None:
        """A StageContext `emit`: step events move the status line."""
        if kind == "step":
            self.stage = data.get("stage", self.stage)
            self.step = data.get("step", "") if data.get("status") == "start" else self.step
            self.show()


# --- one unit --------------------------------------------------------------------------------
class UnitFailed(RuntimeError):
    def __init__(self, stage: str, step: str, error: BaseException):
        super().__init__(f"{stage}{(':' + step) if step else ''}: {type(error).__name__}: {error}")
        self.stage, self.step, self.error = stage, step, error


def run_unit(unit: WorkUnit, ctx: StageContext, stages: tuple[str, ...] = STAGES,
             skip_done: bool = True) -> dict[str, StageResult | None]:
    """simulate -> detector1 -> image2 for one unit; with `skip_done`, a stage whose product exists
    is skipped (until one stage runs: the stages after it then run too).

    Raises UnitFailed naming the stage and step; the caller records it and moves on.
    """
    results: dict[str, StageResult | None] = {}
    step = [""]

    def emit(kind: str, **data: Any) -> None:
        if kind == "step":  # remember the step running now, so a failure names where it happened
            step[0] = data.get("step", "") if data.get("status") in ("start", "failed") else ""
        ctx.emit(kind, **data)

    unit_ctx = StageContext(cfg=ctx.cfg, run=ctx.run, emit=emit, log=ctx.log)
    for stage in stages:
        if skip_done and product_path(ctx.run, unit, stage).is_file():
            results[stage] = None
            continue
        skip_done = False
        step[0] = ""
        try:
            results[stage] = run_stage(stage, unit, unit_ctx)
        except (Exception, SystemExit) as e:  # SystemExit: some CRDS/Mirage paths call sys.exit
            ctx.log.error("%s failed in %s (step %s):\n%s", unit.unit_id, stage, step[0] or "-",
                          traceback.format_exc())
            raise UnitFailed(stage, step[0], e) from e
    return results


@contextlib.contextmanager
def unit_log(path: Path) -> Iterator[logging.Logger]:
    """Everything logged (jwst, Mirage, ours) while the block runs goes to `path`."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    handler.setLevel(logging.INFO)
    old_level = root.level
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    root.addHandler(handler)
    try:
        yield logging.getLogger("dream_hpc.unit")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


# --- the survey ------------------------------------------------------------------------------
def _stage_record(result: StageResult, wall: float) -> dict[str, Any]:
    d = result.to_dict()
    d["wall_s"] = wall
    return d


def _start_run(cfg: SurveyConfig, run: RunDir, units: list[WorkUnit]) -> None:
    """Write config.yaml and plan.json; refuse a RUN made from a different config."""
    if run.config.is_file() and run.config.read_text() != cfg.text:
        raise UserError(f"{run.root}: holds a run of a different config (products would mix); use another "
                        f"--out, or the same config to resume")
    atomic_write_text(run.config, cfg.text)
    atomic_write_text(run.plan, json.dumps([u.to_dict() for u in units], indent=1) + "\n")
    from dream_hpc import catalog
    from dream_hpc.plan import footprint_png

    sources = catalog.load_catalog(cfg, sorted({u.filter for u in units})).sources  # cached: already read
    footprint_png(cfg, units, run.figures / "footprint.png", (sources.ra, sources.dec))


def mosaic_one(filt: str, units: list[WorkUnit], cfg: SurveyConfig, run: RunDir, progress: Progress,
               journal: JournalWriter | None = None) -> dict[str, Any]:
    """Image3 for one filter, then the science check; returns the summary entry for the filter."""
    from dream_hpc import mosaic, science

    progress.unit, progress.stage, progress.step = f"mosaic {filt}", "image3", ""
    progress.show()
    t0 = time.monotonic()
    def emit(kind: str, **data: Any) -> None:
        if kind == "step" and journal:
            journal.write("step", filter=filt, **data)
        progress.event(kind, **data)

    with unit_log(run.logs / f"mosaic_{filt.lower()}.log") as log:
        ctx = StageContext(cfg=cfg, run=run, emit=emit, log=log)
        try:
            result = mosaic.run_mosaic(filt, units, ctx)
        except Exception as e:
            log.error("mosaic %s failed:\n%s", filt, traceback.format_exc())
            if journal:
                journal.write("mosaic_failed", filter=filt, error=f"{type(e).__name__}: {e}")
            raise
        wall = time.monotonic() - t0
        if journal:
            journal.write("mosaic_done", filter=filt, asn=result.extra["asn"], inputs=result.inputs,
                          outputs=result.outputs, params=result.params, refs=result.refs,
                          ref_sha256=result.ref_sha256, wall_s=wall,
                          step_times=result.step_times, tweakreg=result.extra["tweakreg"])
        entry: dict[str, Any] = {"product": result.extra["product"], "n_inputs": result.extra["n_inputs"],
                                 "i2d": result.extra["i2d"], "segm": result.extra["segm"],
                                 "cat": result.extra["cat"], "preview": result.extra["preview"],
                                 "wall_s": wall, "step_times": result.step_times,
                                 "tweakreg": result.extra["tweakreg"],
                                 "n_refcat_stars": result.extra["n_refcat_stars"]}
        t1 = time.monotonic()
        check = science.check_filter(cfg, filt, run.root / result.extra["i2d"], run.root / result.extra["cat"])
        figure = run.figures / f"science_{filt.lower()}.png"
        science.figure([check], figure)
        entry["science"] = science.public(check)
        entry["science_figure"] = run.rel(figure)
        entry["science_wall_s"] = time.monotonic() - t1
    progress.say(f"mosaic {filt}: {result.extra['product']}_i2d.fits from {len(units)} exposures in "
                 f"{wall:.0f} s; tweakreg " + ("fitted" if result.extra["tweakreg"]["fitted"]
                                              else f"DID NOT FIT ({result.extra['tweakreg']['reason']})"))
    return entry


def run_survey(config_path: str | Path, out: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Every stage serially; returns (and writes) the summary."""
    t_start = time.monotonic()
    cfg = prepare(config_path)
    units, check = plan_and_check(cfg)
    run = RunDir.create(out)
    with run.lock("survey"):
        _start_run(cfg, run, units)
        progress = Progress(total=len(units), quiet=quiet)
        progress.say(f"survey {cfg.survey.name}: {len(units)} units ({len({u.filter for u in units})} filters) "
                     f"-> {run.root}")
        for line in check.lines():
            progress.say("  " + line)
        journal = JournalWriter(run.journal, rank=0)
        from dream_hpc.runinfo import collect

        # the same run facts the MPI engine records, so audit/compare/reproduce work on survey runs too
        journal.write("run_start", **collect(cfg, run, mpi_size=1, hosts=[journal.host]), launcher="survey")
        per_unit: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for unit in units:
            progress.unit, progress.stage, progress.step = unit.unit_id, "", ""
            progress.show()
            t0 = time.monotonic()
            journal.write("unit_start", unit=unit.unit_id, stage=STAGES[0])

            def emit(kind: str, _unit: str = unit.unit_id, **data: Any) -> None:
                if kind == "step":
                    journal.write("step", unit=_unit, **data)
                progress.event(kind, **data)

            with unit_log(run.logs / f"{unit.unit_id}.log") as log:
                ctx = StageContext(cfg=cfg, run=run, emit=emit, log=log)
                stage_times: dict[str, float] = {}
                try:
                    results = _run_unit_journaled(unit, ctx, journal, stage_times)
                except UnitFailed as e:
                    failures[unit.unit_id] = {"stage": e.stage, "step": e.step, "error": str(e.error),
                                              "log": run.rel(run.logs / f"{unit.unit_id}.log")}
                    journal.write("unit_failed", unit=unit.unit_id, stage=e.stage, step=e.step, error=str(e.error))
                    progress.failed += 1
                    progress.say(f"{unit.unit_id}: FAILED in {e} (log: {failures[unit.unit_id]['log']})")
                    continue
            wall = time.monotonic() - t0
            progress.unit_times.append(wall)
            progress.done += 1
            journal.write("unit_done", unit=unit.unit_id, wall_s=wall, outputs=_unit_outputs(run, unit, results))
            per_unit[unit.unit_id] = {"filter": unit.filter, "detector": unit.detector, "wall_s": wall,
                                      "stage_wall_s": stage_times,
                                      "skipped_existing": [s for s, r in results.items() if r is None],
                                      "step_times": {s: r.step_times for s, r in results.items() if r}}
            stages = ", ".join(f"{st} {t:.1f}" if per_unit[unit.unit_id]["step_times"].get(st) is not None
                               else f"{st} kept" for st, t in stage_times.items())
            progress.say(f"[{progress.done + progress.failed}/{progress.total} units, {progress.failed} failed] "
                         f"{unit.unit_id} done in {wall:.1f} s ({stages}); elapsed "
                         f"{_clock(time.monotonic() - progress.start)}, ETA {progress.eta()}")
            progress.show()
        progress.unit = ""
        progress.show(final=True)

        mosaics: dict[str, Any] = {}
        done_units = [u for u in units if u.unit_id in per_unit]
        for filt in sorted({u.filter.upper() for u in units}):
            members = [u for u in done_units if u.filter.upper() == filt]
            n_failed = sum(1 for u in units if u.filter.upper() == filt and u.unit_id in failures)
            if not members:
                mosaics[filt] = {"error": "no finished exposures"}
                continue
            if n_failed and not cfg.engine.allow_partial_mosaic:
                # a mosaic missing exposures would silently replace a complete one
                mosaics[filt] = {"error": f"{n_failed} of {n_failed + len(members)} exposures failed: mosaic not "
                                          "made (fix them and rerun, or set engine.allow_partial_mosaic: true)"}
                progress.say(f"mosaic {filt}: skipped, {mosaics[filt]['error']}")
                continue
            try:
                mosaics[filt] = mosaic_one(filt, members, cfg, run, progress, journal)
            except Exception as e:
                mosaics[filt] = {"error": f"{type(e).__name__}: {e}",
                                 "log": run.rel(run.logs / f"mosaic_{filt.lower()}.log")}
                progress.say(f"mosaic {filt}: FAILED: {e}")

        summary = _summary(cfg, run, units, per_unit, failures, mosaics, time.monotonic() - t_start)
        journal.write("run_end", status="ok" if not failures and all("error" not in m for m in mosaics.values())
                      else "partial", n_done=len(per_unit), n_failed=len(failures))
        journal.close()
        from dream_hpc.provenance import consolidate

        summary["provenance"] = run.rel(consolidate(run))
        write_summary(run, summary)
    if not quiet:
        print(format_summary(summary))
    return summary


def _unit_outputs(run: RunDir, unit: WorkUnit, results: dict[str, StageResult | None]) -> dict[str, str]:
    """relpath -> sha256 of the unit's three products (as `dream-hpc mosaic` and resume verify them)."""
    out: dict[str, str] = {}
    for stage in STAGES:
        rel = run.rel(product_path(run, unit, stage))
        result = results.get(stage)
        out[rel] = result.outputs[rel] if result and rel in result.outputs else sha256_file(run.root / rel)
    return out


def _run_unit_journaled(unit: WorkUnit, ctx: StageContext, journal: JournalWriter,
                        stage_times: dict[str, float]) -> dict[str, StageResult | None]:
    """`run_unit`, one stage at a time so each stage's record reaches the journal as it ends."""
    results: dict[str, StageResult | None] = {}
    for stage in STAGES:
        t0 = time.monotonic()
        # once a stage runs, everything after it is remade too: an older product would not match
        redo = any(r is not None for r in results.values())
        out = run_unit(unit, ctx, stages=(stage,), skip_done=not redo)
        results.update(out)
        stage_times[stage] = time.monotonic() - t0
        if out[stage] is not None:
            journal.write("stage_done", unit=unit.unit_id, **_stage_record(out[stage], stage_times[stage]))
    return results


# --- summary ---------------------------------------------------------------------------------
def _summary(cfg: SurveyConfig, run: RunDir, units: list[WorkUnit], per_unit: dict[str, Any],
             failures: dict[str, Any], mosaics: dict[str, Any], wall: float) -> dict[str, Any]:
    stage_means = {}
    for stage in STAGES:
        vals = [u["stage_wall_s"][stage] for u in per_unit.values() if stage in u["stage_wall_s"]]
        if vals:
            stage_means[stage] = {"mean_s": sum(vals) / len(vals), "max_s": max(vals), "n": len(vals)}
    summary = {
        "survey": cfg.survey.name,
        "config_sha256": cfg.sha256,
        "run": str(run.root),
        "n_units": len(units),
        "n_done": len(per_unit),
        "n_failed": len(failures),
        "wall_s": wall,
        "stage_times": stage_means,
        "failures": failures,
        "mosaics": mosaics,
        "figures": sorted(run.rel(p) for p in run.figures.glob("*.png")),
        "units": per_unit,
    }
    write_summary(run, summary)
    return summary


def write_summary(run: RunDir, summary: dict[str, Any]) -> None:
    summary["figures"] = sorted(run.rel(p) for p in run.figures.glob("*.png"))
    atomic_write_text(run.summary, json.dumps(summary, indent=1, default=str) + "\n")


def update_mosaics(run: RunDir, mosaics: dict[str, Any]) -> dict[str, Any]:
    """Merge per-filter mosaic entries into RUN/summary.json (what `dream-hpc mosaic` adds to a run)."""
    summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {"run": str(run.root)}
    summary.setdefault("mosaics", {}).update(mosaics)
    write_summary(run, summary)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"survey {s['survey']}: {s['n_done']}/{s['n_units']} units done, {s['n_failed']} failed, "
             f"wall {_clock(s['wall_s'])}"]
    for stage, t in s["stage_times"].items():
        lines.append(f"  {stage:10s} mean {t['mean_s']:6.1f} s  max {t['max_s']:6.1f} s  ({t['n']} units)")
    for unit_id, f in s["failures"].items():
        lines.append(f"  FAILED {unit_id}: {f['stage']}{(':' + f['step']) if f['step'] else ''}: "
                     f"{f['error'][:160]} (log: {f['log']})")
    for filt, m in s["mosaics"].items():
        if "error" in m:
            lines.append(f"  {filt}: mosaic FAILED: {m['error'][:200]}")
            continue
        lines.append(f"  {filt}: {m['i2d']} ({m['n_inputs']} exposures, {m['wall_s']:.0f} s), "
                     f"tweakreg {'fitted' if m['tweakreg']['fitted'] else 'DID NOT FIT'}, preview {m['preview']}")
        sc = m.get("science")
        if sc:
            off, mag, ok = sc["offset_px"], sc["mag_residual"], sc["passed"]

            def f3(v: Any) -> str:
                return "n/a" if v is None else f"{v:+.3f}"

            comp = "n/a" if sc["completeness"] is None else f"{sc['completeness']:.0%}"
            lines.append(f"      science: completeness {comp} of {sc['n_bright_isolated']} bright isolated "
                         f"[{'ok' if ok['completeness'] else 'LOW'}]; offsets dx {f3(off['median_dx'])} "
                         f"dy {f3(off['median_dy'])} px [{'ok' if ok['astrometry'] else 'OFF'}]; "
                         f"mag residual {f3(mag['median'])} ({mag['population']}, n={mag['n']}) "
                         f"[{'ok' if ok['photometry'] else 'OFF'}]")
    lines.append(f"  summary: {Path(s['run']) / 'summary.json'}; figures: {', '.join(s['figures'])}")
    return "\n".join(lines)


def format_mosaics(mosaics: dict[str, Any]) -> str:
    """The per-filter lines of `format_summary` alone (what `dream-hpc mosaic` prints)."""
    return "\n".join(format_summary({"survey": "", "n_done": 0, "n_units": 0, "n_failed": 0, "wall_s": 0,
                                     "stage_times": {}, "failures": {}, "mosaics": mosaics, "run": ".",
                                     "figures": []}).splitlines()[1:-1])


# --- CLI -------------------------------------------------------------------------------------
def _cmd_survey(args: argparse.Namespace) -> int:
    summary = run_survey(args.config, args.out, quiet=args.quiet)
    ok = summary["n_failed"] == 0 and all("error" not in m for m in summary["mosaics"].values())
    return 0 if ok else 1


def add_commands(sub: Any) -> None:
    p = sub.add_parser("survey", help="run a whole survey serially on this machine (simulate -> Image3)",
                       description="Run every stage of a survey on one machine: simulate, Detector1 and Image2 "
                                   "per exposure, Image3 per filter, the science check and a summary.")
    p.add_argument("config", help="survey config (YAML), e.g. config/demo.yaml")
    p.add_argument("--out", required=True, help="run directory (created; rerun with the same config to resume)")
    p.add_argument("--quiet", action="store_true", help="no progress display or printed summary")
    p.set_defaults(func=_cmd_survey)
