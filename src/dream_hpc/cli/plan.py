"""`dream-hpc plan`: the plan's size, cost and footprint, with ranks-per-node advice (optionally measured)."""

from __future__ import annotations

from typing import Any

from dream_hpc.core.errors import UserError
from dream_hpc.plan.figure import footprint_png
from dream_hpc.plan.pointings import make_plan
from dream_hpc.plan.summary import format_summary, summarize, write_plan


def _cmd_plan(args: Any) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.core.rundir import RunDir, refuse_unsafe_out

    if args.out:
        refuse_unsafe_out(args.out)  # before any output: a refused --out is the only line
    cfg = load_config(args.config)
    units = make_plan(cfg)
    summary = summarize(cfg, units, args.node_mem_gb, args.node_cores, measured_run=args.measured)
    print(format_summary(summary))
    tiles = None
    if cfg.mosaic.mode == "tiles":
        from dream_hpc.plan.grid import filter_tiles, format_tiles, tiles_summary

        summary["tiles"] = tiles_summary(cfg, units, args.node_mem_gb)
        print("\n".join(format_tiles(summary["tiles"])))
        tiles = filter_tiles(cfg, units, args.node_mem_gb)
    if not args.out:
        print("(pass --out RUN to write RUN/plan.json and RUN/figures/footprint.png)")
        return 0
    run = RunDir.create(args.out)
    write_plan(run.plan, units, summary)
    radec, weight, note = None, 1.0, ""
    try:
        # the density from a bounded subsample of the prepared catalog (the user cache's, as `catalog
        # check` makes it; written once if missing), never the whole catalog in memory
        from dream_hpc.catalog import prepared

        ra, dec, weight = prepared.open_prepared(prepared.prepare(cfg, units).path).sample_positions()
        radec = (ra, dec)
    except UserError as e:
        note = f" (no catalog density: {e})"
    png = footprint_png(cfg, units, run.figures / "footprint.png", radec, tiles=tiles, catalog_weight=weight)
    print(f"wrote {run.plan} and {png}{note}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("plan", help="expand the survey into work units; print its size and cost")
    p.add_argument("config")
    p.add_argument("--out", help="run directory: writes RUN/plan.json and RUN/figures/footprint.png")
    p.add_argument("--node-mem-gb", type=float, default=24.0, help="memory per node for the ranks advice")
    p.add_argument("--node-cores", type=int, default=2, help="cores per node for the ranks advice")
    p.add_argument("--measured", metavar="RUN",
                   help="also advise from the peak memory and CPU measured in RUN (e.g. a small pilot run)")
    p.set_defaults(func=_cmd_plan)
