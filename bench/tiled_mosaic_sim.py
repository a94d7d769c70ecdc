"""Predict the tiled mosaic phase (engine/mosaic_graph.py) at cluster scale, and the whole survey with it.

The engine's own `Scheduler` with the `TiledMosaics` task graph on a simulated clock (no compute):
astrometry per visit -> outliers per padded visit -> tiles -> merge per filter, every task taking its
planned cost (plan/cost.py; tiles: plan/grid.tile_cost). Printed per rank count:
- the mosaic phase alone (all units done at t=0): predicted makespan, its lower bound
  max(total work / ranks, the graph's critical path) and the efficiency bound / makespan;
- the whole survey (units, then each filter's graph as its units end): makespan and its bound,
  beside one Image3 per filter (what `mosaic.mode: single` would do: ~122 h for cosmos-web).

    python bench/tiled_mosaic_sim.py [config/cosmos-web.yaml] [--ranks 64 256 1024] [--scatter 0.3]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from pathlib import Path

from dream_hpc.engine.executor import Outcome
from dream_hpc.engine.mosaic_graph import TiledMosaics
from dream_hpc.engine.scheduler import Scheduler
from dream_hpc.engine.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from scheduler_sim import plan_tasks, simulate, without_tails  # noqa: E402


def run_graph(units: list[Task], factory: TiledMosaics, workers: int, unit_scale: float = 1.0,
              scatter: float = 0.0, seed: int = 1, latency_s: float = 0.005) -> dict[str, float]:
    """Simulated clock over units (cost x unit_scale; 0 = all done at t=0) and the tiled graph."""
    rng = random.Random(seed)
    tasks = [Task(t.key, t.kind, t.cost * unit_scale, t.limit_s, unit=t.unit) for t in units]
    sched = Scheduler(tasks, factory)
    idle, running = list(range(workers)), []
    now = 0.0
    spent: dict[str, float] = {}
    while not sched.finished:
        while idle and (task := sched.next()):
            dur = task.cost * (rng.lognormvariate(0.0, scatter) if scatter and task.cost else 1.0)
            spent[task.key] = dur
            heapq.heappush(running, (now + latency_s + dur, idle.pop(), task.key))
        if not running:
            break
        now, w, key = heapq.heappop(running)
        sched.complete(Outcome(key, sched.running[key].kind, "done"))
        idle.append(w)
    # critical path through the graph (units included at their simulated duration)
    finish: dict[str, float] = {}

    def path(key: str) -> float:
        if key not in finish:
            t = sched.tasks[key]
            finish[key] = spent.get(key, 0.0) + max((path(d) for d in t.after), default=0.0)
        return finish[key]

    critical = max((path(k) for k in sched.tasks), default=0.0)
    mosaic_work = sum(v for k, v in spent.items() if sched.tasks[k].kind == "mosaic")
    work = sum(spent.values())
    return {"makespan": now, "lower_bound": max(work / workers, critical), "critical_path": critical,
            "work": work, "mosaic_work": mosaic_work, "blocked": len(sched.blocked),
            "n_mosaic_tasks": sum(t.kind == "mosaic" for t in sched.tasks.values())}


def main(argv: list[str] | None = None) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.plan.pointings import make_plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "config" / "cosmos-web.yaml"))
    ap.add_argument("--ranks", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--scatter", type=float, default=0.0, help="log-normal sigma of actual/estimated task time")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    t0 = time.perf_counter()
    plan = make_plan(cfg)
    factory = TiledMosaics(cfg, None, plan)
    tasks = plan_tasks(Path(args.config))
    n_tiles = {f: len([t for t in g.tiles if t.units]) for f, g in factory.grids.items()}
    print(f"{args.config}: {len(tasks)} units, tiles per filter {n_tiles} (planned in {time.perf_counter() - t0:.0f} s)")
    print(f"{'ranks':>6s} | {'mosaic phase':>12s} {'bound':>9s} {'crit.path':>9s} {'effic.':>6s} | "
          f"{'survey, tiles':>13s} {'bound':>9s} {'effic.':>6s} | {'survey, single Image3':>21s}")
    for n in args.ranks:
        phase = run_graph(tasks, factory, n, unit_scale=0.0, scatter=args.scatter)
        whole = run_graph(tasks, factory, n, unit_scale=1.0, scatter=args.scatter)
        single = simulate(without_tails(tasks), n, args.scatter)
        print(f"{n:6d} | {phase['makespan'] / 3600:11.2f}h {phase['lower_bound'] / 3600:8.2f}h "
              f"{phase['critical_path'] / 3600:8.2f}h {phase['lower_bound'] / phase['makespan']:6.3f} | "
              f"{whole['makespan'] / 3600:12.2f}h {whole['lower_bound'] / 3600:8.2f}h "
              f"{whole['lower_bound'] / whole['makespan']:6.3f} | {single['makespan'] / 3600:20.1f}h")
    print(f"mosaic work {phase['mosaic_work'] / 3600:.1f} CPU-h in {phase['n_mosaic_tasks']} tasks "
          f"(blocked: {phase['blocked']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
