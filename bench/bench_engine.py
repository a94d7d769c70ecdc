"""Benchmark the engine on the demo workload: the seed notes' strun loop vs dream-hpc on 1 and 2 ranks.

One run, same machine, same config, each variant in its own run directory:
  (a) the seed notes' way: a serial loop of one process per file and stage: a Mirage process per
      unit, `strun calwebb_detector1 <uncal>`, `strun calwebb_image2 <rate>`, then one
      `strun calwebb_image3 <asn>` per filter (every process pays the jwst/Mirage imports);
  (b) `dream-hpc run` with no launcher (1 rank);
  (c) `mpiexec -n 2 dream-hpc run` (rank 0 also computes, the default);
  (d) `mpiexec -n 2 dream-hpc run --coordinator only` (rank 0 only hands out units);
  (e) two independent 1-rank runs of the whole survey at once: the most two processes can get out
      of this machine for this work (on a 2-core VM tasks slow down when both cores compute).
Printed: wall times and ratios; for each dream-hpc variant the fraction of rank time not inside a
Mirage phase or jwst step, split into the engine's part (outside any stage) and the chain's (inside
a stage, outside its steps), with the end-of-run idle tail excluded; and the makespan against the
lower bound max(total task work / ranks, longest task), tasks being units and mosaics.

    python bench/bench_engine.py [--config tests/data/small_survey.yaml] [--kit build/refkit] [--work DIR]
                                 [--only a,b,c,d,e]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    """No MPI or Slurm variables leak into the variants from the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "SLURM_"))}


def _t(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def prepare(config: Path, kit: Path, work: Path) -> Path:
    """The config pointed at the kit and a mock catalog inside `work` (synthesised once)."""
    cfg = yaml.safe_load(config.read_text())
    cfg.setdefault("references", {}).update(crds_path=str(kit / "crds_cache"), mirage_data=str(kit / "mirage_data"))
    catalog = work / "catalog.ecsv"
    cfg.setdefault("catalog", {})["path"] = str(catalog)
    if "photometry" in cfg["catalog"]:  # its pair goes beside it (a relative path would be shared by work dirs)
        cfg["catalog"]["photometry"] = str(work / "photometry.fits")
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not catalog.is_file():
        subprocess.run([sys.executable, "-m", "dream_hpc", "catalog", "synth", str(path), "--out", str(catalog)],
                       check=True, env=_env())
    return path


# --- (a) the seed notes' loop ------------------------------------------------------------------
def _simulate_one(config: str, run: str, unit_id: str) -> int:
    """One Mirage process for one unit (what a user's per-exposure script does)."""
    from dream_hpc.config import load_config
    from dream_hpc.core import offline
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.plan.pointings import make_plan
    from dream_hpc.stages.contract import StageContext
    from dream_hpc.stages.simulate import simulate_unit

    cfg = load_config(config)
    refs = cfg.references
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))
    unit = next(u for u in make_plan(cfg) if u.unit_id == unit_id)
    simulate_unit(unit, StageContext(cfg=cfg, run=RunDir.create(run)))
    return 0


def _write_asn(config: str, run: str, filt: str) -> int:
    """The association (and local astrometric catalog) a user writes before `strun calwebb_image3`."""
    from dream_hpc.config import load_config
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.plan.pointings import make_plan
    from dream_hpc.stages.contract import product_path
    from dream_hpc.stages.image3 import association, write_reference_catalog

    cfg = load_config(config)
    r = RunDir.create(run)
    units = sorted((u for u in make_plan(cfg) if u.filter == filt), key=lambda u: u.unit_id)
    cals = [product_path(r, u, "image2") for u in units]
    (r.mosaic / f"{filt.lower()}_asn.json").write_text(json.dumps(association(units, cals, r.mosaic), indent=1))
    write_reference_catalog(cfg, units, r.mosaic / f"{filt.lower()}_refcat.ecsv")
    return 0


def _step_args(overrides: dict[str, dict[str, Any]]) -> list[str]:
    return [f"--steps.{step}.{k}={v}" for step, pars in overrides.items() for k, v in pars.items()]


def strun_loop(config: Path, run: Path) -> float:
    from dream_hpc.config import load_config
    from dream_hpc.core import offline
    from dream_hpc.plan.pointings import make_plan

    cfg = load_config(config)
    refs = cfg.references
    env = {**_env(), **offline.crds_env(cfg.resolve(refs.crds_path), refs.context),
           "MIRAGE_DATA": str(cfg.resolve(refs.mirage_data)), **{v: "1" for v in offline.THREAD_VARS}}
    exposures = run / "exposures"
    exposures.mkdir(parents=True, exist_ok=True)
    (run / "mosaic").mkdir(exist_ok=True)
    log = open(run / "strun.log", "w")  # noqa: SIM115
    units = make_plan(cfg)

    def call(cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=run)

    t0 = time.perf_counter()
    for u in units:
        call([sys.executable, __file__, "_simulate", str(config), str(run), u.unit_id])
        call([str(BIN / "strun"), "calwebb_detector1", str(exposures / u.filename("uncal")),
              "--output_dir", str(exposures), *_step_args(cfg.pipeline.detector1)])
        call([str(BIN / "strun"), "calwebb_image2", str(exposures / u.filename("rate")),
              "--output_dir", str(exposures), *_step_args(cfg.pipeline.image2)])
    for filt in sorted({u.filter for u in units}):
        call([sys.executable, __file__, "_asn", str(config), str(run), filt])
        image3 = dict(cfg.pipeline.image3)
        image3.setdefault("tweakreg", {}).setdefault("abs_refcat", str(run / "mosaic" / f"{filt.lower()}_refcat.ecsv"))
        call([str(BIN / "strun"), "calwebb_image3", str(run / "mosaic" / f"{filt.lower()}_asn.json"),
              "--output_dir", str(run / "mosaic"), *_step_args(image3)])
    wall = time.perf_counter() - t0
    log.close()
    return wall


# --- (b, c, d) dream-hpc --------------------------------------------------------------------
def dream(config: Path, run: Path, ranks: int | None, *extra: str) -> float:
    cmd = [str(BIN / "dream-hpc"), "run", str(config), "--out", str(run), *extra]
    if ranks:
        cmd = [str(BIN / "mpiexec"), "-n", str(ranks), *cmd]
    t0 = time.perf_counter()
    with open(str(run) + ".log", "w") as log:
        proc = subprocess.run(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode} (see {run}.log)")
    return wall


def concurrent_copies(config: Path, run: Path, copies: int = 2) -> float:
    """(e) `copies` independent 1-rank runs of the whole survey at once: what this machine gives two
    processes doing this very work with no coordination at all (the ceiling for (c) on 2 cores)."""
    procs = []
    t0 = time.perf_counter()
    for i in range(copies):
        out = run / f"copy{i}"
        log = open(str(out) + ".log", "w")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen([str(BIN / "dream-hpc"), "run", str(config), "--out", str(out)], env=_env(),
                                       stdout=log, stderr=subprocess.STDOUT), log))
    codes = [p.wait() for p, _ in procs]
    wall = time.perf_counter() - t0
    for _, log in procs:
        log.close()
    if any(codes):
        raise SystemExit(f"concurrent copies failed with exit codes {codes} (see {run}/copy*.log)")
    return wall


def journal_figures(run: Path, wall: float, t_launch: float) -> dict[str, float]:
    """Where the rank time (ranks x wall) of one dream-hpc run went, from its journal.

    steps = inside Mirage phases / jwst steps (the chain's step_times); chain = inside the stage
    functions but outside steps (checks, hashes, saves); between = on a rank between its first stage
    start and its last stage end but in no stage (dispatch, journal, worker hand-over); start-up =
    launch to a rank's first stage (process start, imports, planning); wrap-up = after the last stage
    of the whole run (timeline, run_end, exit), for every rank; idle = a rank with nothing left to do
    while others still compute (load balance: see the makespan ratio), excluded from the overhead.
    """
    from dream_hpc.core.journal import journal_files, read_file

    stage_s = step_s = startup = between = idle = 0.0
    tasks: dict[str, float] = {}
    spans: list[tuple[float, float, float]] = []  # per rank: first start, last end, stage seconds
    for f in journal_files(run / "journal"):
        recs = read_file(f).records
        first, last, mine = float("inf"), 0.0, 0.0
        for r in recs:
            if r["kind"] not in ("stage_done", "mosaic_done"):
                continue
            d, end = r["data"], _t(r["time"])
            start = _t(d["start"]) if d.get("start") else end - float(d["wall_s"])
            mine += float(d["wall_s"])
            step_s += sum(d.get("step_times", {}).values())
            key = r.get("unit") or f"mosaic_{d.get('filter')}"
            tasks[key] = tasks.get(key, 0.0) + float(d["wall_s"])
            first, last = min(first, start), max(last, end)
        if mine:
            spans.append((first, last, mine))
        stage_s += mine
    ranks = len(spans)
    t_end = t_launch + wall
    global_last = max(s[1] for s in spans)
    for first, last, mine in spans:
        startup += first - t_launch
        between += (last - first) - mine
        idle += global_last - last
    wrapup = ranks * (t_end - global_last)
    busy = ranks * wall - idle
    work = sum(tasks.values())
    lower = max(work / max(ranks, 1), max(tasks.values(), default=0.0))
    steady = (between + stage_s - step_s) / max(between + stage_s, 1e-9)
    return {"ranks": ranks, "outside_steps": (busy - step_s) / busy, "startup": startup / busy,
            "between": between / busy, "chain_outside_steps": (stage_s - step_s) / busy, "wrapup": wrapup / busy,
            "steady_state": steady, "startup_s": startup / max(ranks, 1), "wrapup_s": t_end - global_last,
            "idle_s": idle, "makespan_s": global_last - min(s[0] for s in spans), "lower_bound_s": lower,
            "work_s": work}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "tests" / "data" / "small_survey.yaml"))  # SUB400P: comparable
    ap.add_argument("--kit", default=str(ROOT / "build" / "refkit"))
    ap.add_argument("--work", default="/tmp/dream-hpc-bench", help="scratch directory (its run dirs are replaced)")
    ap.add_argument("--only", default="a,b,c,d,e", help="variants to run, e.g. b,c,e")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = prepare(Path(args.config).resolve(), Path(args.kit).resolve(), work)
    variants = {
        "a": ("strun loop (seed notes)", lambda run: strun_loop(config, run)),
        "b": ("dream-hpc, 1 rank", lambda run: dream(config, run, None)),
        "c": ("dream-hpc, 2 ranks", lambda run: dream(config, run, 2)),
        "d": ("dream-hpc, 2 ranks, rank 0 only coordinates", lambda run: dream(config, run, 2, "--coordinator", "only")),
        "e": ("2 independent 1-rank runs at once (ceiling)", lambda run: concurrent_copies(config, run)),
    }
    walls: dict[str, float] = {}
    figures: dict[str, dict[str, float]] = {}
    for key in args.only.split(","):
        name, fn = variants[key]
        run = work / f"run_{key}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        print(f"({key}) {name} ...", flush=True)
        t_launch = time.time()
        walls[key] = fn(run)
        print(f"({key}) {name}: {walls[key]:.1f} s", flush=True)
        if key in ("b", "c", "d"):
            figures[key] = journal_figures(run, walls[key], t_launch)
    print(f"\n== {Path(args.config).name}: results (wall seconds; lower is better)")
    for key, wall in walls.items():
        print(f"  ({key}) {variants[key][0]:46s} {wall:8.1f} s")
    if "b" in walls and "c" in walls:
        print(f"  speed-up 2 ranks vs 1 rank (b/c):             {walls['b'] / walls['c']:6.2f}x   (goal >= 1.8x)")
    if "a" in walls and "c" in walls:
        print(f"  speed-up dream-hpc 2 ranks vs strun loop (a/c): {walls['a'] / walls['c']:6.2f}x   (goal >= 2x)")
    if "a" in walls and "b" in walls:
        print(f"  speed-up dream-hpc 1 rank vs strun loop (a/b):  {walls['a'] / walls['b']:6.2f}x")
    if "b" in walls and "e" in walls:
        ceiling = 2 * walls["b"] / walls["e"]
        print(f"  this machine's ceiling for 2 processes (2 x b/e):  {ceiling:6.2f}x   (two copies, no coordination)")
        if "c" in walls:
            print(f"  2 ranks vs that ceiling ((b/c) / (2 b/e)):      {walls['b'] / walls['c'] / ceiling:6.1%}")
    if "c" in walls and "d" in walls:
        print(f"  rank 0 computing vs only coordinating (d/c):  {walls['d'] / walls['c']:6.2f}x")
    for key, f in figures.items():
        print(f"  ({key}) rank time outside Mirage/jwst steps: {100 * f['outside_steps']:.1f}% (goal < 2%) = "
              f"start-up {100 * f['startup']:.1f}% ({f['startup_s']:.1f} s per rank: launch, imports, planning) + "
              f"between stages {100 * f['between']:.1f}% (dispatch, journal) + chain "
              f"{100 * f['chain_outside_steps']:.1f}% (inside stages, outside steps: checks, hashes, saves) + "
              f"wrap-up {100 * f['wrapup']:.1f}% ({f['wrapup_s']:.1f} s: timeline, exit); idle {f['idle_s']:.1f} "
              "rank-s excluded")
        print(f"      steady state (start-up and wrap-up amortised over a long run): {100 * f['steady_state']:.1f}% "
              "outside steps")
        print(f"      makespan (first stage start to last end) {f['makespan_s']:.1f} s vs lower bound max(work/ranks, "
              f"longest task) {f['lower_bound_s']:.1f} s: ratio {f['makespan_s'] / max(f['lower_bound_s'], 1e-9):.3f}")
    (work / "results.json").write_text(json.dumps({"walls": walls, "figures": figures}, indent=1))
    print(f"\nraw figures: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_simulate":
        sys.exit(_simulate_one(*sys.argv[2:5]))
    if len(sys.argv) > 1 and sys.argv[1] == "_asn":
        sys.exit(_write_asn(*sys.argv[2:5]))
    sys.exit(main())
