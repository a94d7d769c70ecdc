"""Across nodes for real: Slurm clusters whose slurmds live in their own network and UTS namespaces
(scripts/local-slurm-cluster.sh), one shared file system, MPI over TCP between them.

- MPI ranks on two nodes talk over the cluster network (bytes through the bridge), not shared memory;
- `sbatch --nodes=2 slurm/full_survey.sh` runs the test survey with ranks on both nodes (the
  journal names both hosts), then the Image3 job; the result compares bit-identical to the
  one-node Slurm run of tests/test_slurm.py;
- a node lost mid-run (every process on it KILLed while its rank is inside a unit): Slurm marks it
  DOWN and requeues the job, which runs again on the nodes left, takes over the dead host's run
  lock once it is provably stale, redoes exactly the units that were not done, and ends
  bit-identical to the one-node run.
"""

from __future__ import annotations

import datetime
import re
import sys
import time
from pathlib import Path

import pytest
from _slurm_survey_fixtures import (
    JOB_TIMEOUT_S,
    Submission,
    assert_bit_identical,
    assert_each_unit_done_once,
    assert_mosaic_and_audit,
    journal_records,
    submit,
)

TWO_NODES = ("--nodes=2", "--ntasks-per-node=1")
PROBE = """
import socket
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
data = np.full(1 << 20, comm.rank, dtype=np.float64)  # 8 MiB each way
got = np.empty_like(data)
comm.Sendrecv(data, dest=(comm.rank + 1) % comm.size, recvbuf=got, source=(comm.rank - 1) % comm.size)
assert got[0] == (comm.rank - 1) % comm.size
names = comm.gather(socket.gethostname())
if comm.rank == 0:
    print("hosts", *names)
"""


def _time(record: dict) -> float:
    return datetime.datetime.fromisoformat(record["time"]).timestamp()


@pytest.mark.slurm
@pytest.mark.mpi
def test_mpi_between_nodes_goes_over_the_network(local_cluster) -> None:
    before = local_cluster.bridge_bytes()
    done = local_cluster.run("srun", "--nodes=2", "--ntasks-per-node=1", "--mem-per-cpu=1G", "--mpi=pmi2",
                             sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["hosts", "dn1", "dn2"], done.stdout
    sent = local_cluster.bridge_bytes() - before
    assert sent > 2 * 8 * 2**20, f"only {sent} bytes crossed the cluster network: not MPI over TCP"


@pytest.fixture(scope="session")
def two_node_survey(local_cluster, slurm_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Submission:
    base = tmp_path_factory.mktemp("two-node-survey")
    t0 = time.monotonic()
    sub = submit(local_cluster, slurm_config, base / "run", base, shape=TWO_NODES)
    sub.states = local_cluster.wait([sub.survey_job, sub.image3_job], JOB_TIMEOUT_S)
    sub.wall_s = time.monotonic() - t0
    print(f"\ntwo-node Slurm up in {local_cluster.start_s:.1f} s; sbatch -> both jobs done in {sub.wall_s:.0f} s")
    return sub


@pytest.mark.slurm
@pytest.mark.slow
def test_survey_on_two_nodes(two_node_survey: Submission, slurm_survey: Submission) -> None:
    sub = two_node_survey
    assert sub.states == {sub.survey_job: "COMPLETED", sub.image3_job: "COMPLETED"}, (
        f"{sub.states}\n{sub.log(sub.survey_job)}\n{sub.log(sub.image3_job, 'dream-image3')}")
    assert_each_unit_done_once(sub.run)
    records = journal_records(sub.run)
    first = next(r for r in records if r["kind"] == "run_start")
    assert sorted(first["data"]["hosts"]) == ["dn1", "dn2"] and first["data"]["mpi_size"] == 2
    assert first["data"]["slurm"]["nodelist"] == "dn[1-2]"
    # Both nodes did units: each rank journals its host.
    assert {r["host"] for r in records if r["kind"] == "unit_done"} == {"dn1", "dn2"}
    assert_mosaic_and_audit(sub.run)
    assert_bit_identical(slurm_survey.run, sub.run)


@pytest.mark.slurm
@pytest.mark.slow
def test_node_lost_mid_run_requeues_and_redoes_only_unfinished_units(
        fresh_cluster, slurm_config: Path, slurm_survey: Submission, tmp_path: Path) -> None:
    cluster = fresh_cluster
    # A lock left by a dead host is stale after 30 s without heartbeat (default 120 s; Slurm's
    # SlurmdTimeout, 300 s by default, usually outlasts it anyway).
    sub = submit(cluster, slurm_config, tmp_path / "run", tmp_path, shape=TWO_NODES, DREAM_LOCK_STALE_S="30")
    run = sub.run

    def inside_unit_on_rank0() -> bool:
        recs = journal_records(run)
        done = {r["unit"] for r in recs if r["kind"] == "unit_done"}
        running = {r["unit"] for r in recs if r["kind"] == "unit_start" and r["rank"] == 0} - done
        return bool(done) and bool(running)

    cluster.wait_for(inside_unit_on_rank0, JOB_TIMEOUT_S, "rank 0 inside a unit after a first finished unit",
                     poll=0.3, job=sub.survey_job)
    victim = cluster.job(sub.survey_job)["BatchHost"]  # the batch script, rank 0 and the run lock live there
    done_at_kill = {r["unit"] for r in journal_records(run) if r["kind"] == "unit_done"}
    t_kill = time.time()
    cluster.kill_node(victim)

    cluster.wait_for(lambda: cluster.node_state(victim).startswith("down"), 120, f"Slurm to mark {victim} down")
    t_detected = time.time()
    cluster.wait_for(lambda: int(cluster.job(sub.survey_job).get("Restarts", 0)) >= 1, 120, "the requeue")
    t_requeued = time.time()
    states = cluster.wait([sub.survey_job, sub.image3_job], JOB_TIMEOUT_S)
    t_end = time.time()
    log = sub.log(sub.survey_job)
    assert states == {sub.survey_job: "COMPLETED", sub.image3_job: "COMPLETED"}, f"{states}\n{log}"
    assert int(cluster.job(sub.survey_job)["Restarts"]) == 1, log
    assert victim not in cluster.job(sub.survey_job)["NodeList"]

    records = journal_records(run)
    starts = [r for r in records if r["kind"] == "run_start"]
    resumed = next(r for r in starts if _time(r) > t_kill)
    assert victim not in resumed["data"]["hosts"] and resumed["data"]["slurm"]["job_id"] == sub.survey_job
    # The dead host's run lock was recognised as stale, not waited on forever nor ignored.
    assert "taking over the lock of dream-hpc run (MPI size 2), pid" in log and f"on {victim}" in log, log
    # Exactly the units not done when the job resumed were run again; none done before was.
    done_before = {r["unit"] for r in records if r["kind"] == "unit_done" and _time(r) < _time(resumed)}
    started_after = {r["unit"] for r in records if r["kind"] == "unit_start" and _time(r) >= _time(resumed)}
    units = {r["unit"] for r in records if r["kind"] == "unit_done"}
    interrupted = {r["unit"] for r in records if r["kind"] == "unit_start" and _time(r) < _time(resumed)} - done_before
    assert done_at_kill <= done_before and started_after == units - done_before, (done_before, started_after)
    assert interrupted, "the kill came when no unit was running"
    assert_each_unit_done_once(run)
    # Nothing half-written by the dead node counts or stays: the resumed pass removed it.
    assert not list(run.rglob(".tmp-*")), list(run.rglob(".tmp-*"))
    assert_mosaic_and_audit(run)
    assert_bit_identical(slurm_survey.run, run)
    resumed_s = _time(resumed) - t_kill
    took = re.search(r"taking over the lock of .*?: (heartbeat \d+ s old)", log)
    print(f"\nnode loss on a {len(cluster.nodes)}-node cluster (up in {cluster.start_s:.1f} s): killed {victim} at 0 s; "
          f"DOWN at {t_detected - t_kill:.0f} s; requeued at {t_requeued - t_kill:.0f} s; resumed (run lock taken "
          f"over, {took.group(1) if took else '?'}) at {resumed_s:.0f} s; survey + Image3 done at {t_end - t_kill:.0f} s; of {len(units)} units "
          f"{len(done_before)} kept, {len(interrupted)} interrupted and redone, "
          f"{len(started_after - interrupted)} not yet started")
