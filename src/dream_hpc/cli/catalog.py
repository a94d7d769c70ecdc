"""`dream-hpc catalog synth|check`: a DREaM-like mock for a footprint, and the check of a catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.catalog.reader import CatalogError
from dream_hpc.catalog.survey_check import check_catalog


def _cmd_synth(args: Any) -> int:
    from dream_hpc.catalog import synth as catalog_synth
    from dream_hpc.config import load_config
    from dream_hpc.plan import pointings

    cfg = load_config(args.config)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CatalogError(f"{out}: already exists (pass --overwrite to replace it, or choose another --out)")
    units = pointings.make_plan(cfg)
    table = catalog_synth.synthesize(cfg, units)
    catalog_synth.write_table(table, out, cfg)
    n_star = int(np.sum(table[cfg.catalog.columns.is_star]))
    print(f"wrote {out}: {len(table):,} sources ({len(table) - n_star:,} galaxies, {n_star:,} stars) "
          f"over {table.meta['area_arcmin2']:.2f} arcmin^2, seed {cfg.survey.seed}")
    return 0


def _cmd_check(args: Any) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.plan import pointings

    cfg = load_config(args.config)
    result = check_catalog(cfg, pointings.make_plan(cfg))
    print("\n".join(result.lines()))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("catalog", help="synthesize or check the source catalog")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    s = csub.add_parser("synth", help="write a DREaM-like mock catalog covering the config's footprint")
    s.add_argument("config")
    s.add_argument("--out", required=True, help="catalog file to write (.ecsv, .fits or .h5)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing file")
    s.set_defaults(func=_cmd_synth)
    c = csub.add_parser("check", help="counts, bad rows and sources on the survey footprint")
    c.add_argument("config")
    c.set_defaults(func=_cmd_check)
