"""Benchmark the engine on the demo workload: the seed notes' strun loop vs dream-hpc on 1 and 2 ranks.

One run, same machine, same config, each variant in its own run directory:
  (a) the seed notes' way: a serial loop of one process per file and stage: a Mirage process per
      unit, `strun calwebb_detector1 <uncal>`, `strun calwebb_image2 <rate>`, then one
      `strun calwebb_image3 <asn>` per filter (every process pays the jwst/Mirage imports);
  (b) `dream-hpc run` with no launcher (1 rank);
  (c) `mpiexec -n 2 dream-hpc run` (rank 0 also computes, the default);
  (d) `mpiexec -n 2 dream-hpc run --coordinator only` (rank 0 only hands out units).
Printed: wall times and ratios; the orchestration overhead of (b) and (c): the fraction of rank
time not inside a Mirage phase or jwst step (time a rank sat idle because no task was left is
counted separately, as the end-of-run tail); and the makespan of (c)'s units against the lower
bound max(total unit work / ranks, longest unit).

    python bench/bench_engine.py [--config config/demo.yaml] [--kit build/refkit] [--work DIR]
                                 [--only a,b,c,d]
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
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not catalog.is_file():
        subprocess.run([sys.executable, "-m", "dream_hpc", "catalog", "synth", str(path), "--out", str(catalog)],
                       check=True, env=_env())
    return path


# --- (a) the seed notes' loop ------------------------------------------------------------------
def _simulate_one(config: str, run: str, unit_id: str) -> int:
    """One Mirage process for one unit (what a user's per-exposure script does)."""
    from dream_hpc import offline
    from dream_hpc.config import load_config
    from dream_hpc.plan import make_plan
    from dream_hpc.rundir import RunDir
    from dream_hpc.simulate import simulate_unit
    from dream_hpc.stages import StageContext

    cfg = load_config(config)
    refs = cfg.references
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))
    unit = next(u for u in make_plan(cfg) if u.unit_id == unit_id)
    simulate_unit(unit, StageContext(cfg=cfg, run=RunDir.create(run)))
    return 0


def _write_asn(config: str, run: str, filt: str) -> int:
    """The association (and local astrometric catalog) a user writes before `strun calwebb_image3`."""
    from dream_hpc.config import load_config
    from dream_hpc.mosaic import association, write_reference_catalog
    from dream_hpc.plan import make_plan
    from dream_hpc.rundir import RunDir
    from dream_hpc.stages import product_path

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
    from dream_hpc import offline
    from dream_hpc.config import load_config
    from dream_hpc.plan import make_plan

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


def journal_figures(run: Path, wall: float, t_launch: float) -> dict[str, float]:
    """Overhead and makespan figures of one dream-hpc run from its journal."""
    from dream_hpc.journal import journal_files, read_file

    in_steps = tail = 0.0
    unit_work: dict[str, float] = {}
    ranks = 0
    for f in journal_files(run / "journal"):
        recs, _ = read_file(f)
        ranks += 1
        open_steps: dict[tuple[str, str], float] = {}
        last_end = t_launch
        for r in recs:
            d, now = r["data"], _t(r["time"])
            key = (str(r.get("unit") or d.get("filter")), str(d.get("step")))
            if r["kind"] == "step" and d.get("status") == "start":
                open_steps[key] = now
            elif r["kind"] == "step" and d.get("status") in ("done", "failed") and key in open_steps:
                in_steps += now - open_steps.pop(key)
            elif r["kind"] in ("unit_done", "mosaic_done", "unit_failed", "unit_timeout", "mosaic_failed"):
                last_end = now
            if r["kind"] == "unit_done":
                unit_work[r["unit"]] = float(d.get("wall_s", 0.0))
        tail += max(0.0, t_launch + wall - last_end)
    rank_time = ranks * wall
    busy = rank_time - tail
    lower = max(sum(unit_work.values()) / max(ranks, 1), max(unit_work.values(), default=0.0))
    starts = [_t(r["time"]) for f in journal_files(run / "journal") for r in read_file(f)[0] if r["kind"] == "unit_start"]
    ends = [_t(r["time"]) for f in journal_files(run / "journal") for r in read_file(f)[0] if r["kind"] == "unit_done"]
    units_span = (max(ends) - min(starts)) if starts and ends else 0.0
    return {"ranks": ranks, "overhead": 1.0 - in_steps / busy if busy > 0 else float("nan"),
            "overhead_with_tail": 1.0 - in_steps / rank_time, "in_steps_s": in_steps, "tail_s": tail,
            "units_makespan_s": units_span, "lower_bound_s": lower, "unit_work_s": sum(unit_work.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    ap.add_argument("--kit", default=str(ROOT / "build" / "refkit"))
    ap.add_argument("--work", default="/tmp/dream-hpc-bench", help="scratch directory (its run dirs are replaced)")
    ap.add_argument("--only", default="a,b,c,d", help="variants to run, e.g. b,c")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = prepare(Path(args.config).resolve(), Path(args.kit).resolve(), work)
    variants = {
        "a": ("strun loop (seed notes)", lambda run: strun_loop(config, run)),
        "b": ("dream-hpc, 1 rank", lambda run: dream(config, run, None)),
        "c": ("dream-hpc, 2 ranks", lambda run: dream(config, run, 2)),
        "d": ("dream-hpc, 2 ranks, rank 0 only coordinates", lambda run: dream(config, run, 2, "--coordinator", "only")),
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
        if key != "a":
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
    if "c" in walls and "d" in walls:
        print(f"  rank 0 computing vs only coordinating (d/c):  {walls['d'] / walls['c']:6.2f}x")
    for key, f in figures.items():
        print(f"  ({key}) overhead (rank time outside Mirage/jwst steps, end-of-run idle excluded): "
              f"{100 * f['overhead']:.1f}%  (goal < 2%); with idle tail: {100 * f['overhead_with_tail']:.1f}%")
        print(f"      units makespan {f['units_makespan_s']:.1f} s vs lower bound max(work/ranks, longest unit) "
              f"{f['lower_bound_s']:.1f} s: ratio {f['units_makespan_s'] / max(f['lower_bound_s'], 1e-9):.3f}")
    (work / "results.json").write_text(json.dumps({"walls": walls, "figures": figures}, indent=1))
    print(f"\nraw figures: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_simulate":
        sys.exit(_simulate_one(*sys.argv[2:5]))
    if len(sys.argv) > 1 and sys.argv[1] == "_asn":
        sys.exit(_write_asn(*sys.argv[2:5]))
    sys.exit(main())
