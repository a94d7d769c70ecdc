"""Predict dream-hpc's makespan at cluster scale: the engine's own Scheduler on a simulated clock.

No compute runs: each unit takes its planned cost (`est_cpu_s` from the plan's cost model, with
optional log-normal scatter, since real units never take exactly their estimate), each mosaic its
Image3 cost. The same `dream_hpc.engine.Scheduler` that `dream-hpc run` uses hands out the tasks
(longest expected first, one mosaic per filter when its units are done). Printed per rank count:
the makespan of the units, its lower bound max(total work / ranks, longest unit), their ratio, and
the same for a static split (units dealt round-robin in plan order, what a naive MPI script does);
then the whole run with and without reference affinity (ranks preferring units whose references they
hold hot): makespan / lower bound and the hit rate.

    python bench/scheduler_sim.py [config/cosmos-web.yaml] [--ranks 64 128 ...] [--scatter 0.3]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from dream_hpc.engine.scheduler import replay
from dream_hpc.engine.tasks import Task, image3_seconds

ROOT = Path(__file__).resolve().parents[1]


def simulate(tasks: list[Task], ranks: int, scatter: float = 0.0, seed: int = 1, latency_s: float = 0.005,
             mosaic_seconds: Any = image3_seconds, coordinator_works: bool = True, affinity: bool = True,
             hit_factor: float = 1.0) -> dict[str, float]:
    """The engine's own replay of its Scheduler on `ranks` workers, units scattered around their estimate."""
    rng = random.Random(seed)
    actual = {t.key: t.cost * (rng.lognormvariate(0.0, scatter) if scatter else 1.0) for t in tasks}
    workers = ranks if coordinator_works or ranks == 1 else ranks - 1
    return {"ranks": ranks, **replay(tasks, workers, actual, mosaic_seconds, latency_s, affinity, hit_factor)}


def static_split(tasks: list[Task], ranks: int, scatter: float = 0.0, seed: int = 1) -> float:
    """Units dealt round-robin in plan order, no rebalancing: the naive MPI split, for contrast."""
    rng = random.Random(seed)
    actual = [t.cost * (rng.lognormvariate(0.0, scatter) if scatter else 1.0) for t in tasks]
    loads = [0.0] * ranks
    for i, a in enumerate(actual):
        loads[i % ranks] += a
    return max(loads)


def plan_tasks(config: Path) -> list[Task]:
    """The config's units as engine tasks, each with its filter's expected Image3 as `tail` (as run does)."""
    from dream_hpc.config import load_config
    from dream_hpc.engine.tasks import mosaic_tails
    from dream_hpc.plan.pointings import make_plan

    units = make_plan(load_config(config))
    tails = mosaic_tails(units)
    return [Task(u.unit_id, "unit", max(u.est_cpu_s, 1.0), 1e9, unit=u, tail=tails[u.filter]) for u in units]


def without_tails(tasks: list[Task]) -> list[Task]:
    return [Task(t.key, t.kind, t.cost, t.limit_s, unit=t.unit) for t in tasks]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "config" / "cosmos-web.yaml"))
    ap.add_argument("--ranks", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    ap.add_argument("--scatter", type=float, default=0.3, help="log-normal sigma of actual/estimated unit time")
    ap.add_argument("--hit-factor", type=float, default=1.0,
                    help="unit time when its rank holds its references hot, relative to cold (affinity table)")
    args = ap.parse_args(argv)
    tasks = plan_tasks(Path(args.config))
    hours = sum(t.cost for t in tasks) / 3600
    print(f"{args.config}: {len(tasks)} units, {hours:.1f} CPU-hours planned, longest unit "
          f"{max(t.cost for t in tasks):.0f} s, scatter sigma {args.scatter}")
    print("units only: the engine's longest-first order vs a static round-robin split; then the whole run with "
          "one Image3 per filter in both orders (the engine replays both before a run and takes the faster)")
    print(f"{'ranks':>6s} {'units':>9s} {'bound':>9s} {'ratio':>6s} {'static':>9s} {'ratio':>6s} | "
          f"{'all, LPT':>9s} {'all, path':>9s} {'bound':>9s} {'ratio':>6s}")
    plain = without_tails(tasks)
    for n in args.ranks:
        lpt = simulate(plain, n, args.scatter, mosaic_seconds=lambda units: 0.0)
        st = static_split(tasks, n, args.scatter)
        whole_lpt = simulate(plain, n, args.scatter)
        whole = simulate(tasks, n, args.scatter)
        print(f"{n:6d} {lpt['units_makespan']:8.0f}s {lpt['units_lower_bound']:8.0f}s "
              f"{lpt['units_makespan'] / lpt['units_lower_bound']:6.3f} {st:8.0f}s {st / lpt['units_lower_bound']:6.3f} | "
              f"{whole_lpt['makespan']:8.0f}s {whole['makespan']:8.0f}s {whole['lower_bound']:8.0f}s "
              f"{min(whole['makespan'], whole_lpt['makespan']) / whole['lower_bound']:6.3f}")
    print(f"\nreference affinity (engine/affinity.py): a rank asks for the kind whose references it holds; "
          f"makespan / lower bound of the whole run and the fraction of units that found their references hot "
          f"(hit-factor {args.hit_factor}: the lower bound is taken with cold durations)")
    print(f"{'ranks':>6s} {'plain':>7s} {'hits':>6s} {'affinity':>9s} {'hits':>6s}")
    for n in args.ranks:
        off = simulate(tasks, n, args.scatter, affinity=False, hit_factor=args.hit_factor)
        on = simulate(tasks, n, args.scatter, affinity=True, hit_factor=args.hit_factor)
        print(f"{n:6d} {off['makespan'] / off['lower_bound']:7.3f} {off['kind_hit_rate']:6.1%} "
              f"{on['makespan'] / on['lower_bound']:9.3f} {on['kind_hit_rate']:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
