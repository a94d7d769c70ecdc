"""`dream-hpc slurm binds`: the host paths a survey touches, as container bind paths for slurm/*.sh."""

from __future__ import annotations

import argparse
from pathlib import Path

from dream_hpc.config import load_config
from dream_hpc.drivers.binds import bind_paths


def _cmd_binds(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    for path in bind_paths(cfg, Path(args.run) if args.run else None):
        print(path)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slurm", help="helpers for slurm/*.sh (container binds)")
    ssub = p.add_subparsers(dest="slurm_command", metavar="SUBCOMMAND", required=True)
    b = ssub.add_parser("binds", help="host directories the config (and RUN) use, one per line, for apptainer --bind",
                        description="Print the directories a survey reads or writes (config, catalog, CRDS cache, "
                        "MIRAGE_DATA, APT files, and RUN), nested ones folded into their parent. Existence is "
                        "not checked: the caller keeps those present on the host.")
    b.add_argument("config", help="survey config (YAML)")
    b.add_argument("--run", help="run directory (listed first)")
    b.set_defaults(func=_cmd_binds)
