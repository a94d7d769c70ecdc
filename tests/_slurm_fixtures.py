"""Fixtures for the Slurm tests: system packages, and real Slurm clusters started for the tests.

`local_slurm` installs Debian's slurm-wlm and munge if needed (scripts/install-sysdeps.sh), starts
munged/slurmctld/slurmd with scripts/local-slurm.sh into a tmp dir and stops exactly those daemons
at the end. `local_cluster` (session) and `fresh_cluster` (one test, e.g. one that kills a node)
are two-node clusters from scripts/local-slurm-cluster.sh: each slurmd in its own network and UTS
namespace; stopping one also removes its namespaces and bridge, also after a failed test.
They skip, naming the reason, only where that is impossible (not root, no apt-get).
"""

from __future__ import annotations

import contextlib
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


@dataclass
class MultiNodeCluster(SlurmCluster):
    nodes: list[str]
    script: Path

    def kill_node(self, node: str) -> None:
        """Power cut: KILL every process in the node's namespaces (slurmd, steps, ranks, workers)."""
        done = subprocess.run([str(self.script), "kill-node", str(self.directory), node], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"kill-node {node} failed:\n{done.stdout}\n{done.stderr}"

    def node_state(self, node: str) -> str:
        return self.run("sinfo", "-h", "-N", "-n", node, "-o", "%t").stdout.strip()

    def bridge_bytes(self) -> int:
        """Bytes the nodes have sent into the cluster's bridge (its veth ports' rx counters)."""
        record = dict(re.findall(r"^(\w+)=(\S*)$", (self.directory / "cluster.env").read_text(), flags=re.M))
        ports = Path("/sys/class/net") / record["bridge"] / "brif"
        return sum(int((Path("/sys/class/net") / p.name / "statistics" / "rx_bytes").read_text())
                   for p in ports.iterdir())


def _skip_without_slurm(sysdeps: dict[str, bool]) -> None:
    why = _can_install()
    if not (sysdeps["sbatch"] and sysdeps["slurmctld"] and sysdeps["munged"]):
        pytest.skip(f"Slurm is not installed and cannot be ({why}): run scripts/install-sysdeps.sh as root")
    if os.geteuid() != 0:
        pytest.skip("not root: network namespaces and slurmd need root (scripts/local-slurm-cluster.sh)")
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("iproute2/util-linux missing: run scripts/install-sysdeps.sh as root")
    probe = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:  # e.g. root inside a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot make network namespaces here ({probe.stderr.strip()}): run on a VM or host as root")


# MPI between the namespaced nodes: MPICH's ch4:ofi netmod with libfabric's tcp provider on the
# nodes' one interface (docs/cluster.md, "MPI between nodes"). UCX would not do for a test: it
# takes the namespaces for one machine (same boot id) and sends over shared memory, not the network.
CLUSTER_MPI_ENV = {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "eth0"}


@contextlib.contextmanager
def _multi_node(directory: Path, nodes: int = 2):
    script = SCRIPTS / "local-slurm-cluster.sh"
    t0 = time.monotonic()
    env = {**os.environ, "LOCAL_SLURM_NODES": str(nodes)}
    job_env = {**{k: v for k, v in os.environ.items() if k != "UCX_TLS"}, **CLUSTER_MPI_ENV,
               "SLURM_CONF": str(directory / "slurm.conf")}
    try:
        done = subprocess.run([str(script), "start", str(directory)], capture_output=True, text=True, timeout=180,
                              env=env)
        start_s = time.monotonic() - t0
        assert done.returncode == 0, f"local-slurm-cluster start failed:\n{done.stdout}\n{done.stderr}"
        yield MultiNodeCluster(directory, job_env, start_s, [f"dn{i}" for i in range(1, nodes + 1)], script)
    finally:  # also after a failed start or test: no namespace, bridge or daemon is left behind
        stop = subprocess.run([str(script), "stop", str(directory)], capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, f"local-slurm-cluster stop failed:\n{stop.stdout}\n{stop.stderr}"


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory, sysdeps: dict[str, bool]):
    """A running two-node Slurm (nodes dn1, dn2 in their own namespaces), stopped after the session."""
    _skip_without_slurm(sysdeps)
    with _multi_node(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory, sysdeps: dict[str, bool]):
    """A three-node Slurm of its own for one test that kills a node: a two-node job requeued after
    losing a node runs again on the two left, as it would on a real cluster with more nodes."""
    _skip_without_slurm(sysdeps)
    with _multi_node(tmp_path_factory.mktemp("cluster"), nodes=3) as cluster:
        yield cluster
