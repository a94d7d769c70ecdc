"""Fixtures for the engine tests: the smallest real survey (4 units, 2 filters) on the shared kit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"


def engine_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that would make a child think it is an MPI rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "SLURM_"))}
    env.update(extra)
    return env


def dream_run(config: Path, out: Path, ranks: int | None, *args: str, env: dict[str, str] | None = None,
              timeout: float = 900) -> subprocess.CompletedProcess:
    """`dream-hpc run` under `mpiexec -n ranks` (ranks=None: plain, no launcher)."""
    cmd = [sys.executable, "-m", "dream_hpc", "run", str(config), "--out", str(out), *args]
    if ranks is not None:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or engine_env(), cwd=ROOT)


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def engine_config(tmp_path_factory: pytest.TempPathFactory, refkit_dir: Path) -> Path:
    """tests/data/small_survey.yaml cut down: one tile x 2 dithers x (NRCB1 F150W + NRCB5 F277W), SUB400P BRIGHT2 x4 = 4 units."""
    from _chain_fixtures import demo_like, write_config

    d = tmp_path_factory.mktemp("engine")
    cfg = demo_like(refkit_dir, d / "catalog.ecsv",
                    pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                    instrument={"readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}},
                    engine={"unit_timeout_s": 150.0, "progress_interval_s": 5.0})
    return write_config(d, cfg)
