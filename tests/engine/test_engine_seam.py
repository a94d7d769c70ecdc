"""The engine's failure paths in seconds: the real Executor, WorkerProcess and Coordinator around a
stand-in stage set (tests/stand_in_stages.py) instead of Mirage and jwst.

What these show holds for any stage set, the real one included: a raising stage fails only its unit,
naming the stage and step; a hanging stage is killed at its time limit; a worker killed mid-unit is
recorded as such and the next unit gets a fresh worker; a rerun computes only what is not verified.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from dream_hpc.config import load_config
from dream_hpc.core.journal import JournalWriter, ordered_records, read_journal
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import read_run
from dream_hpc.core.workunit import STAGES, WorkUnit
from dream_hpc.engine.coordinator import Coordinator
from dream_hpc.engine.executor import Executor
from dream_hpc.engine.mpi import SerialComm
from dream_hpc.engine.progress import Progress
from dream_hpc.engine.scheduler import Scheduler
from dream_hpc.engine.tasks import Task

STAND_IN = "stand_in_stages"
HERE = Path(__file__).resolve().parents[1]  # tests/, where the stand-in lives


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the worker subprocess imports the stand-in from the tests directory
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))
    monkeypatch.delenv("DREAM_HPC_TEST_FAULT", raising=False)
    for d in ("crds", "mirage"):
        (tmp_path / d).mkdir()
    cfg_path = tmp_path / "survey.yaml"
    cfg_path.write_text(f"references:\n  crds_path: {tmp_path / 'crds'}\n  mirage_data: {tmp_path / 'mirage'}\n")
    cfg = load_config(cfg_path)
    run = RunDir.create(tmp_path / "run")
    return cfg, run


def unit(exposure: int, filt: str = "F150W") -> WorkUnit:
    return WorkUnit(program="09999", observation=1, visit=1, visit_group=1, sequence=1, activity=1,
                    exposure=exposure, detector="NRCB1", filter=filt, pupil="CLEAR", subarray="SUB160",
                    readpatt="RAPID", ngroups=3, nints=1, ra=150.0, dec=2.0, pa_v3=0.0,
                    date_obs="2024-01-01", time_obs="00:00:00.000", est_cpu_s=1.0)


def task(u: WorkUnit, limit_s: float = 60.0, **kw) -> Task:
    return Task(u.unit_id, "unit", 1.0, limit_s, unit=u, **kw)


def run_task(ex: Executor, t: Task, timeout_s: float = 60.0):
    oc = ex.start(t)
    t0 = time.monotonic()
    while oc is None:
        assert time.monotonic() - t0 < timeout_s, f"{t.key} did not end"
        oc = ex.poll(0.2)
    ex.task = None
    return oc


def test_units_succeed_fail_hang_and_die_each_alone(setup, monkeypatch) -> None:
    cfg, run = setup
    ok, raising, hanging, dying, after = (unit(i) for i in range(1, 6))
    monkeypatch.setenv("DREAM_HPC_TEST_FAULT", f"{raising.unit_id}:detector1:raise,{hanging.unit_id}:image2:hang")
    monkeypatch.setenv("STAND_IN_DIE", dying.unit_id)
    journal = JournalWriter(run.journal, 0)
    ex = Executor(cfg, run, journal, 0, stages=STAND_IN)
    try:
        outcomes = {u.unit_id: run_task(ex, task(u, limit_s=3.0 if u is hanging else 60.0))
                    for u in (ok, raising, hanging, dying, after)}
    finally:
        ex.shutdown(kill=True)
        journal.close()
    assert outcomes[ok.unit_id].status == "done" and outcomes[after.unit_id].status == "done"
    assert (outcomes[raising.unit_id].status, outcomes[raising.unit_id].stage) == ("failed", "detector1")
    assert "injected test fault" in outcomes[raising.unit_id].error
    assert (outcomes[hanging.unit_id].status, outcomes[hanging.unit_id].stage) == ("timeout", "image2")
    assert outcomes[hanging.unit_id].wall_s < 30  # killed at its 3 s limit, not after the day it sleeps
    assert outcomes[dying.unit_id].status == "failed" and "SIGKILL" in outcomes[dying.unit_id].error
    # the journal, read back as status and resume read it
    view = read_run(run)
    assert view.units[ok.unit_id].status == "done" and set(view.units[ok.unit_id].stages) == set(STAGES)
    assert (view.units[raising.unit_id].status, view.units[raising.unit_id].stage) == ("failed", "detector1")
    assert view.units[hanging.unit_id].status == "timeout"
    assert view.units[dying.unit_id].status == "failed"
    assert all(not f.problems for f in read_journal(run.journal))


def test_rerun_computes_only_what_does_not_verify(setup) -> None:
    cfg, run = setup
    u = unit(1)
    journal = JournalWriter(run.journal, 0)
    ex = Executor(cfg, run, journal, 0, stages=STAND_IN)
    try:
        assert run_task(ex, task(u)).status == "done"
        cal = run.exposures / u.filename("cal")
        first = cal.read_bytes()
        (run.exposures / u.filename("rate")).write_text("corrupt\n")  # a damaged intermediate
        cal.unlink()
        state = read_run(run).units[u.unit_id]
        again = task(u, recorded={"done": state.done, "stages": state.stages})
        oc = run_task(ex, again)
        assert oc.status == "done" and again.verified_stages == ["simulate"]  # detector1 onwards redone
        assert cal.read_bytes() == first  # bit for bit
        state = read_run(run).units[u.unit_id]
        assert run_task(ex, task(u, recorded={"done": state.done, "stages": state.stages})).status == "skipped"
    finally:
        ex.shutdown(kill=True)
        journal.close()


def test_coordinator_releases_the_mosaic_only_when_every_unit_ended(setup, monkeypatch) -> None:
    cfg, run = setup
    good = [unit(i) for i in (1, 2)]
    other = [unit(i, "F277W") for i in (3, 4)]
    monkeypatch.setenv("DREAM_HPC_TEST_FAULT", f"{other[0].unit_id}:simulate:raise")
    made: list[str] = []

    def factory(filt, ok, outcomes):
        made.append(filt)
        return Task(f"mosaic_{filt}", "mosaic", 1.0, 60.0, filter=filt, units=[t.unit for t in ok])

    journal = JournalWriter(run.journal, 0)
    sched = Scheduler([task(u) for u in good + other], factory)
    import io

    coord = Coordinator(SerialComm(), sched, None, Progress({}, io.StringIO()), journal)
    coord.executor = ex = Executor(cfg, run, journal, 0, notify=coord.notify, stages=STAND_IN)
    try:
        coord.run()
    finally:
        ex.shutdown(kill=True)
        journal.close()
    assert made == ["F150W"]  # F277W is blocked: one of its units failed and partial mosaics are off
    assert "did not finish" in sched.blocked["F277W"] and other[0].unit_id in sched.blocked["F277W"]
    assert sched.outcomes["mosaic_F150W"].status == "done"
    assert (run.mosaic / "f150w_i2d.txt").read_text().count("\n") == 2
    mosaic = read_run(run).mosaics["F150W"]  # what resume and the summary read back: products and times
    assert mosaic.status == "done" and mosaic.data["wall_s"] > 0 and mosaic.data["outputs"]
    kinds = [r["kind"] for r in ordered_records(read_journal(run.journal))]
    assert kinds.count("unit_done") == 3 and kinds.count("mosaic_done") == 1 and kinds.count("unit_failed") == 1
