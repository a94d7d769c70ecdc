"""`dream-hpc run`: the engine on whatever launcher started it (none, `mpiexec` or `srun`)."""

from __future__ import annotations

import argparse


def _cmd_run(args: argparse.Namespace) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.engine.execute import execute

    works = None if args.coordinator is None else args.coordinator == "works"
    return execute(load_config(args.config), args.out, mosaic=not args.no_mosaic,
                   coordinator_works=works).exit_code


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run every unit (and one Image3 per filter); serial, mpiexec or srun",
                       description="Run the survey's units with dynamic scheduling over MPI ranks (or in one "
                       "process without a launcher). Rerunning on the same --out resumes: only missing, "
                       "failed or incomplete units are redone.")
    p.add_argument("config", help="survey config (YAML)")
    p.add_argument("--out", required=True, help="run directory (created; resumed if it exists)")
    p.add_argument("--no-mosaic", action="store_true",
                   help="stop after the units (run `dream-hpc mosaic` later, e.g. as a separate Slurm job)")
    p.add_argument("--coordinator", choices=("works", "only"), default=None,
                   help="rank 0 also computes (works) or only hands out units (only); default: "
                   "engine.coordinator_works")
    p.set_defaults(func=_cmd_run)
