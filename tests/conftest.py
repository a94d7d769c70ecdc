"""Shared pytest fixtures: the offline reference kit, built once per session (or reused from `make kit`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One-node runs (mpiexec, the one-node Slurm): MPICH's default UCX netmod may also wire up its TCP
# transport, whose address exchange fails intermittently ("failed to unpack address, invalid
# bandwidth 0.00" in MPI_Init; cf. pmodels/mpich#7417). Shared memory is all one node needs; the
# setting reaches mpiexec and, through sbatch's exported environment, srun's ranks. The multi-node
# test clusters drop it and use MPICH's OFI netmod over TCP instead (_slurm_fixtures.CLUSTER_MPI_ENV).
os.environ.setdefault("UCX_TLS", "self,sm")


@pytest.fixture(scope="session")
def refkit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built reference kit: build/refkit if `make kit` built it, else a fresh one in a tmp dir."""
    if os.environ.get("DREAM_HPC_NO_KIT"):  # `make test-fast`: a test got here without the kit marker
        pytest.fail("this test needs the reference kit but was collected by `make test-fast` (it should "
                    "have been marked `kit` by tests/conftest.py)")
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
from _slurm_fixtures import fresh_cluster, local_cluster, local_slurm, sysdeps  # noqa: E402,F401  (Slurm, container, shellcheck)
from _slurm_survey_fixtures import slurm_config, slurm_survey  # noqa: E402,F401  (one- and multi-node Slurm tests)

# Fixtures that stand on the reference kit: a test using any of them is marked `kit`, so `make test-fast`
# (-m "not kit ...") runs only what needs no kit; the rest runs in `make test`.
KIT_FIXTURES = {"refkit_dir", "kit"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if KIT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kit)
