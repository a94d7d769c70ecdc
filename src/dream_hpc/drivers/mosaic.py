"""The mosaic driver: verify the units an earlier run finished, run Image3 per filter, write the summary.

Like jwst's `calwebb_image3`, it composes lower layers only: the engine (with units verified, never
computed), then the end-of-run summary (drivers/summary.py) and the run's page (drivers/report.py).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dream_hpc.config import SurveyConfig
from dream_hpc.core.errors import UserError
from dream_hpc.core.rundir import RunDir


def make_mosaics(cfg: SurveyConfig, out: str | Path, filter_: str | None = None, quiet: bool = False,
                 strict: bool = False) -> int:
    """Image3 per filter (or only `filter_`) over the units of run `out` that verify; exit code
    (with `strict`, 4 when a science check failed)."""
    from dream_hpc.core.runstate import read_run
    from dream_hpc.drivers import report, science_truth, summary
    from dream_hpc.engine.execute import execute
    from dream_hpc.stages.preflight import go_offline

    t0 = time.monotonic()
    root = Path(out).resolve()
    if not (root / "exposures").is_dir():
        raise UserError(f"{root}: not a run directory (no exposures/); give the --out of a `dream-hpc survey` "
                        "or `dream-hpc run`")
    filters = {filter_.upper()} if filter_ else None
    if not any(u.status == "done" for u in read_run(RunDir(root)).units.values()):
        raise UserError(f"{root}: no finished exposures for this run (run `dream-hpc run {cfg.source} --out "
                        f"{out} --no-mosaic` or `dream-hpc survey` first)")
    stream = open(os.devnull, "w") if quiet else sys.stderr  # noqa: SIM115 (closed below)
    try:
        result = execute(cfg, root, mosaic=True, stream=stream, compute_units=False, filters=filters)
    finally:
        if quiet:
            stream.close()
    if result.status == "rank":  # under MPI (slurm/image3.sh): rank 0 alone writes the summary
        return result.exit_code
    go_offline(cfg)  # the summary reads the mosaics offline, as the run did
    with result.run.lock("mosaic summary"):
        s = summary.finish(cfg, result.run, time.monotonic() - t0, filters)
        page = report.write_quietly(result.run, cfg)
    if not quiet:
        shown = {f: m for f, m in s["mosaics"].items() if not filters or f in filters}
        print("\n".join(summary.mosaic_lines(shown)))
        if page:
            print(f"  report: {page}")
        print(science_truth.verdict_line({"mosaics": shown}))  # the last line: did every science check pass?
    failed = any("error" in m for f, m in s["mosaics"].items() if not filters or f in filters)
    code = result.exit_code
    code = code if code not in (0, 1) else int(code == 1 or failed)
    shown_all = {f: m for f, m in s["mosaics"].items() if not filters or f in filters}
    if strict and code == 0 and not science_truth.all_passed({"mosaics": shown_all}):
        code = summary.EXIT_SCIENCE_FAILED
    return code
