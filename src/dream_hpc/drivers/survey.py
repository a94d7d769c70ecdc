"""The survey driver: the engine in this process over every unit and mosaic, then the summary.

dream-hpc's `calwebb_*`: it composes the engine (engine/execute.py) and the end-of-run summary
(drivers/summary.py) and the run's page (drivers/report.py); no step logic lives here.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig


def run_survey(cfg: SurveyConfig, out: str | Path, quiet: bool = False,
               strict: bool = False) -> tuple[int, dict[str, Any] | None]:
    """`dream-hpc run` in this process (no launcher) + the summary; (exit code, summary or None if stopped).

    strict: a failed science check (summary["science_passed"] false) is a failed run (exit EXIT_SCIENCE_FAILED = 4; 3 means stopped on request)."""
    from dream_hpc.drivers import report, summary
    from dream_hpc.engine.execute import execute
    from dream_hpc.stages.preflight import go_offline

    t0 = time.monotonic()
    stream = open(os.devnull, "w") if quiet else sys.stdout  # noqa: SIM115 (closed below)
    try:
        result = execute(cfg, out, mosaic=True, stream=stream)
    finally:
        if quiet:
            stream.close()
    if result.stopped or result.status == "rank":  # under mpiexec only rank 0 writes the summary
        return result.exit_code, None
    go_offline(cfg)  # the summary reads the mosaics offline, as the run did
    with result.run.lock("survey summary"):
        s = summary.finish(cfg, result.run, time.monotonic() - t0)
        page = report.write_quietly(result.run, cfg)
    if not quiet:
        text = summary.format_summary(s).splitlines()  # its last line is the science verdict: keep it last
        print("\n".join(text[:-1] + ([f"  report: {page}"] if page else []) + text[-1:]))
    code = result.exit_code or (0 if summary.ok(s) else 1)
    if strict and code == 0 and not s.get("science_passed"):
        code = summary.EXIT_SCIENCE_FAILED
    return code, s
