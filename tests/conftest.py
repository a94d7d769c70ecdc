"""Shared pytest fixtures: the offline reference kit, built once per session (or reused from `make kit`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every test cluster here is one node. MPICH's UCX netmod may also pick its TCP transport, whose
# address exchange fails intermittently on VMs whose NICs report no speed ("failed to unpack address,
# invalid bandwidth 0.00" in MPI_Init; cf. pmodels/mpich#7417). Shared memory is all one node needs;
# the setting reaches mpiexec and, through sbatch's exported environment, srun's ranks.
os.environ.setdefault("UCX_TLS", "self,sm")


@pytest.fixture(scope="session")
def refkit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built reference kit: build/refkit if `make kit` built it, else a fresh one in a tmp dir."""
    built = ROOT / "build" / "refkit"
    if (built / ".built").exists():
        return built
    out = tmp_path_factory.mktemp("refkit")
    subprocess.run([sys.executable, "-m", "dream_hpc", "refkit", "build", "--out", str(out)], check=True)
    return out
from _cache_fixtures import kit  # noqa: E402,F401  (cache, offline and config tests)
from _chain_fixtures import chain_run, science_run  # noqa: E402,F401  (science chain tests)
from _engine_fixtures import engine_config  # noqa: E402,F401  (engine tests)
from _fault_fixtures import two_detector_config  # noqa: E402,F401  (reference-check tests)
from _slurm_fixtures import local_slurm, sysdeps  # noqa: E402,F401  (Slurm, container and shellcheck tests)
