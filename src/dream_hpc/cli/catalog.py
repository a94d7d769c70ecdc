"""`dream-hpc catalog synth|check|prepare`: a DREaM-layout mock for a footprint, the check of a
catalog, and the survey's prepared (spatially sorted, footprint-cut) catalog."""

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
    photometry: Path | None = Path(args.photometry_out) if args.photometry_out else None
    if photometry is None and cfg.catalog.photometry and not args.single:
        photometry = cfg.resolve(cfg.catalog.photometry)
    targets = [out] + ([photometry] if photometry and not args.single else [])
    for path in targets:
        if path.exists() and not args.overwrite:
            raise CatalogError(f"{path}: already exists (pass --overwrite to replace it, or choose another --out)")
    units = pointings.make_plan(cfg)
    table = catalog_synth.synthesize(cfg, units)
    written = catalog_synth.write_table(table, out, cfg, "" if args.single else photometry)
    n_star = int(np.sum(table[cfg.catalog.columns.is_star]))
    where = "centred on (0, 0) as DREaM" if cfg.catalog.recenter else "at the survey position"
    print(f"wrote {' + '.join(str(p) for p in written)}: {len(table):,} sources ({len(table) - n_star:,} galaxies, "
          f"{n_star:,} stars) over {table.meta['area_arcmin2']:.2f} arcmin^2, {where}, seed {cfg.survey.seed}")
    return 0


def _cmd_check(args: Any) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.plan import pointings

    cfg = load_config(args.config)
    result = check_catalog(cfg, pointings.make_plan(cfg), Path(args.prepared) if args.prepared else None)
    print("\n".join(result.lines()))
    return 0


def _cmd_prepare(args: Any) -> int:
    from dream_hpc.catalog import prepared
    from dream_hpc.config import load_config
    from dream_hpc.plan import pointings

    if args.list or args.clean:
        return _cache_listing(args)
    if not args.config:
        raise CatalogError("catalog prepare: give the survey CONFIG (or --list / --clean for the user cache)")
    cfg = load_config(args.config)
    result = prepared.prepare(cfg, pointings.make_plan(cfg), Path(args.out) if args.out else None)
    print(result.report.line())
    state = "up to date (source and settings unchanged)" if result.reused else f"written in {result.seconds:.1f} s"
    print(f"prepared catalog {result.path}: {result.n_rows:,} rows near the footprint, {state}")
    return 0


def _cache_listing(args: Any) -> int:
    """`catalog prepare --list | --clean [CONFIG] [--keep N]`: the prepared catalogs in the user cache."""
    from dream_hpc.catalog import prepared, prepared_cache

    directory = prepared.cache_dir()
    current: Path | None = None
    if args.config:
        from dream_hpc.config import load_config
        from dream_hpc.plan import pointings

        cfg = load_config(args.config)
        current = prepared.default_path(cfg, pointings.make_plan(cfg))
    if args.clean:
        if args.keep < 0:
            raise CatalogError(f"catalog prepare --keep: {args.keep} (how many per survey to keep, 0 or more)")
        removed = prepared_cache.prune(directory, args.keep, protect=(current,) if current else ())
        for p in removed:
            print(f"removed {p}")
        kept = prepared_cache.cached(directory)
        left = sum(c.size for c in kept)
        print(f"{len(removed)} removed; {len(kept)} prepared catalogs left in {directory} ({left / 1e6:,.0f} MB)")
        return 0
    files = prepared_cache.cached(directory)
    for c in files:
        print(c.line(current))
    stale = prepared_cache.stale_staging(directory)
    total = sum(c.size for c in files)
    print(f"{len(files)} prepared catalogs in {directory} ({total / 1e6:,.0f} MB)"
          + (f", {len(stale)} stale staging files" if stale else "")
          + ("; `dream-hpc catalog prepare --clean [CONFIG] [--keep N]` removes them" if files or stale else ""))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("catalog", help="synthesize, check or prepare the source catalog")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    s = csub.add_parser("synth", help="write a DREaM-layout mock catalog covering the config's footprint")
    s.add_argument("config")
    s.add_argument("--out", required=True, help="main table to write (.fits as DREaM; .ecsv or .h5 also work)")
    s.add_argument("--photometry-out", default="",
                   help="photometry table to write (default: the config's catalog.photometry, if set)")
    s.add_argument("--single", action="store_true",
                   help="one table holding the magnitudes too (e.g. a hand-editable .ecsv)")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.set_defaults(func=_cmd_synth)
    c = csub.add_parser("check", help="rows, columns, filters, bad rows, sky area and sources on the footprint")
    c.add_argument("config")
    c.add_argument("--prepared", default="", help="prepared catalog to use or write (default: the user cache)")
    c.set_defaults(func=_cmd_check)
    r = csub.add_parser("prepare", help="the survey's catalog cut to the footprint, sorted by sky cell (HDF5)")
    r.add_argument("config", nargs="?", default="")
    r.add_argument("--out", default="", help="file to write (default: the user cache; runs keep theirs in RUN/catalog)")
    r.add_argument("--list", action="store_true",
                   help="list the prepared catalogs in the user cache (marks CONFIG's, if given)")
    r.add_argument("--clean", action="store_true",
                   help="remove the user cache's prepared catalogs except the newest --keep per survey and "
                        "CONFIG's current one, if given (and staging files of killed prepares)")
    r.add_argument("--keep", type=int, default=0, help="with --clean: newest files kept per survey (default 0)")
    r.set_defaults(func=_cmd_prepare)
