"""Fixtures for the Slurm tests: system packages, and a real one-node Slurm started for the session.

`local_slurm` installs Debian's slurm-wlm and munge if needed (scripts/install-sysdeps.sh), starts
munged/slurmctld/slurmd with scripts/local-slurm.sh into a tmp dir and stops exactly those daemons
at the end. It skips, naming the reason, only where that is impossible (not root, no apt-get).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}


def _can_install() -> str | None:
    """Why system packages cannot be installed here (None: they can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("apt-get") is None:
        return "no apt-get"
    return None


@pytest.fixture(scope="session")
def sysdeps() -> dict[str, bool]:
    """Run scripts/install-sysdeps.sh once; report which tools are present afterwards."""
    if _can_install() is None:
        done = subprocess.run([str(SCRIPTS / "install-sysdeps.sh")], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"install-sysdeps failed:\n{done.stdout}\n{done.stderr}"
    return {tool: shutil.which(tool) is not None
            for tool in ("shellcheck", "sbatch", "slurmctld", "munged", "debootstrap", "mksquashfs", "unshare")}


@dataclass
class SlurmCluster:
    directory: Path
    env: dict[str, str]
    start_s: float

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=kwargs.pop("env", self.env), capture_output=True, text=True,
                              timeout=kwargs.pop("timeout", 60), **kwargs)

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        done = self.run("sbatch", "--parsable", *args, env={**self.env, **(env or {})}, cwd=cwd)
        assert done.returncode == 0, f"sbatch {' '.join(args)} failed: {done.stderr}"
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` fields (empty if Slurm no longer knows the job)."""
        done = self.run("scontrol", "show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", done.stdout)) if done.returncode == 0 else {}

    def state(self, job_id: str) -> str:
        return self.job(job_id).get("JobState", "")

    def wait(self, job_ids: list[str], timeout: float, poll: float = 2.0) -> dict[str, str]:
        """Final state of each job; fails with the jobs' states if any is still unfinished at `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            states = {j: self.state(j) for j in job_ids}
            if all(s in FINISHED for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs not finished after {timeout:.0f} s: {states}")
            time.sleep(poll)

    def wait_for(self, predicate, timeout: float, what: str, poll: float = 1.0, job: str | None = None) -> None:
        """Wait until `predicate()`; with `job`, fail at once if that job ends first (no idle wait)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if job is not None and self.state(job) in FINISHED and not predicate():
                raise AssertionError(f"job {job} ended ({self.state(job)}) before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(poll)


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory: pytest.TempPathFactory, sysdeps: dict[str, bool]):
    """A running one-node Slurm (its SLURM_CONF in `.env`), stopped after the session."""
    why = _can_install()
    if not (sysdeps["sbatch"] and sysdeps["slurmctld"] and sysdeps["munged"]):
        pytest.skip(f"Slurm is not installed and cannot be ({why}): run scripts/install-sysdeps.sh as root")
    if os.geteuid() != 0:
        pytest.skip("not root: slurmd must run as root to start jobs (scripts/local-slurm.sh)")
    directory = tmp_path_factory.mktemp("slurm")
    script = SCRIPTS / "local-slurm.sh"
    t0 = time.monotonic()
    done = subprocess.run([str(script), "start", str(directory)], capture_output=True, text=True, timeout=180)
    start_s = time.monotonic() - t0
    assert done.returncode == 0, f"local-slurm start failed:\n{done.stdout}\n{done.stderr}"
    env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf")}
    try:
        yield SlurmCluster(directory, env, start_s)
    finally:
        stop = subprocess.run([str(script), "stop", str(directory)], capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, f"local-slurm stop failed:\n{stop.stdout}\n{stop.stderr}"
