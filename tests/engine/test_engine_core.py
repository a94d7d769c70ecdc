"""The engine's scheduler-neutral core without MPI or science: ordering, mosaic release, resume, status."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from dream_hpc.config import parse_config
from dream_hpc.core import runstate
from dream_hpc.core.digests import sha256_file
from dream_hpc.core.errors import UserError
from dream_hpc.core.journal import JournalWriter
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import read_run, stage_counts
from dream_hpc.core.workunit import STAGES, WorkUnit
from dream_hpc.engine import coordinator, prepare, scheduler, tasks
from dream_hpc.engine.executor import Outcome
from dream_hpc.engine.progress import Progress
from dream_hpc.engine.scheduler import Scheduler
from dream_hpc.engine.tasks import Task
from dream_hpc.engine.worker import parse_faults

ROOT = Path(__file__).resolve().parents[2]


def unit(exposure: int, filt: str = "F150W", cost: float = 10.0) -> WorkUnit:
    det = "NRCB1" if filt == "F150W" else "NRCB5"
    return WorkUnit(program="09999", observation=1, visit=1, visit_group=1, sequence=1, activity=1,
                    exposure=exposure, detector=det, filter=filt, pupil="CLEAR", subarray="SUB160",
                    readpatt="RAPID", ngroups=3, nints=1, ra=150.0, dec=2.0, pa_v3=0.0,
                    date_obs="2024-01-01", time_obs="00:00:00.000", est_cpu_s=cost)


def unit_task(u: WorkUnit, **kw) -> Task:
    return Task(u.unit_id, "unit", u.est_cpu_s, 100.0, unit=u, **kw)


def mosaic_factory(filt, ok, outcomes):
    return Task(f"mosaic_{filt}", "mosaic", 5.0, 100.0, filter=filt, units=[t.unit for t in ok])


def test_longest_expected_first_and_mosaics_jump_the_queue():
    units = [unit(1, cost=5), unit(2, cost=50), unit(3, cost=20), unit(4, "F277W", cost=1)]
    sched = Scheduler([unit_task(u) for u in units], mosaic_factory)
    order = []
    while (t := sched.next()) is not None:
        order.append(t.key)
        released = sched.complete(Outcome(t.key, t.kind, "done"))
        if t.key == units[3].unit_id:  # the only F277W unit: its mosaic is released at once
            assert released is not None and released.key == "mosaic_F277W"
    costs = [next(u.est_cpu_s for u in units if u.unit_id == k) for k in order if not k.startswith("mosaic")]
    assert costs == [50, 20, 5, 1]
    # a released mosaic goes before any remaining unit: F150W's right after its last unit
    assert order[3:] == ["mosaic_F150W", units[3].unit_id, "mosaic_F277W"]
    assert sched.finished and not sched.blocked


def test_longest_path_first_puts_the_filter_with_the_bigger_mosaic_first():
    a = [unit_task(unit(i, "F150W", cost=10), tail=100.0) for i in range(1, 4)]
    b = [unit_task(unit(i, "F277W", cost=12), tail=1.0) for i in range(1, 4)]
    sched = Scheduler(b + a, mosaic_factory)
    first = [sched.next().key for _ in range(3)]
    assert all("nrcb1" in k for k in first)  # 10 + 100 beats 12 + 1


def test_mosaic_released_once_only_after_every_unit_of_its_filter():
    units = [unit(i) for i in range(1, 4)]
    sched = Scheduler([unit_task(u) for u in units], mosaic_factory)
    tasks = [sched.next() for _ in range(3)]
    assert sched.next() is None  # all running; nothing else yet
    assert sched.complete(Outcome(tasks[0].key, "unit", "done")) is None
    assert sched.complete(Outcome(tasks[1].key, "unit", "skipped")) is None
    mosaic = sched.complete(Outcome(tasks[2].key, "unit", "done"))
    assert mosaic is not None and {u.unit_id for u in mosaic.units} == {u.unit_id for u in units}
    assert sched.next().key == "mosaic_F150W"
    assert sched.next() is None


@pytest.mark.parametrize("allow_partial", [False, True])
def test_failed_unit_blocks_the_mosaic_unless_partial_allowed(allow_partial):
    units = [unit(i) for i in range(1, 4)]
    sched = Scheduler([unit_task(u) for u in units], mosaic_factory, allow_partial=allow_partial)
    tasks = [sched.next() for _ in range(3)]
    sched.complete(Outcome(tasks[0].key, "unit", "failed", stage="detector1", error="boom"))
    sched.complete(Outcome(tasks[1].key, "unit", "timeout", stage="image2"))
    mosaic = sched.complete(Outcome(tasks[2].key, "unit", "done"))
    if allow_partial:
        assert mosaic is not None and [u.unit_id for u in mosaic.units] == [tasks[2].key]
    else:
        assert mosaic is None
        why = sched.blocked["F150W"]
        assert tasks[0].key in why and tasks[1].key in why and "allow_partial_mosaic" in why
    assert sched.next() is (None if not allow_partial else sched.running.get("mosaic_F150W"))


def test_no_mosaic_when_every_unit_failed():
    u = unit(1)
    sched = Scheduler([unit_task(u)], mosaic_factory, allow_partial=True)
    sched.complete(Outcome(sched.next().key, "unit", "failed"))
    assert "none of its 1 units succeeded" in sched.blocked["F150W"]


def _product(run: RunDir, name: str, text: str) -> tuple[str, str]:
    path = run.exposures / name
    path.write_text(text)
    return run.rel(path), sha256_file(path)


def test_resume_recognises_done_units_by_checksum_not_existence(tmp_path):
    run = RunDir.create(tmp_path / "run")
    u = unit(1)
    cal = _product(run, u.filename("cal"), "cal v1")
    task = unit_task(u, recorded={"done": {"outputs": dict([cal])}, "stages": {}})
    assert task.resume_plan(run) == ([], dict([cal]))
    j = JournalWriter(run.journal, 0)
    j.write("unit_done", u.unit_id, outputs=dict([cal]), wall_s=1.0, peak_rss_mb=1.0)
    j.close()
    state = read_run(run).units[u.unit_id]  # what a resumed run reads back from the journal
    assert unit_task(u, recorded={"done": state.done, "stages": state.stages}).resume_plan(run) == ([], dict([cal]))
    (run.root / cal[0]).write_text("cal v1 but edited")  # exists, wrong content: not done
    todo, _ = task.resume_plan(run)
    assert todo == list(STAGES)
    (run.root / cal[0]).unlink()
    assert task.resume_plan(run)[0] == list(STAGES)


def test_resume_starts_at_the_first_stage_not_verified(tmp_path):
    run = RunDir.create(tmp_path / "run")
    u = unit(1)
    uncal = _product(run, u.filename("uncal"), "uncal")
    rate = _product(run, u.filename("rate"), "rate")
    stages = {"simulate": {"inputs": {}, "outputs": dict([uncal])},
              "detector1": {"inputs": dict([uncal]), "outputs": dict([rate])}}
    task = unit_task(u, recorded={"done": None, "stages": stages})
    todo, verified = task.resume_plan(run)
    assert todo == ["image2"] and task.verified_stages == ["simulate", "detector1"]
    assert verified == dict([uncal, rate])
    # detector1 read an uncal that is no longer the one on disk: it must run again
    stages["detector1"]["inputs"] = {uncal[0]: "0" * 64}
    assert task.resume_plan(run)[0] == ["detector1", "image2"]


def test_mosaic_resume_requires_the_same_inputs(tmp_path):
    run = RunDir.create(tmp_path / "run")
    i2d = run.mosaic / "f150w_i2d.fits"
    i2d.write_text("mosaic")
    done = {"inputs": {"exposures/a_cal.fits": "1" * 64, "mosaic/f150w_asn.json": "2" * 64},
            "outputs": {run.rel(i2d): sha256_file(i2d)}}
    task = Task("mosaic_F150W", "mosaic", 1.0, 10.0, filter="F150W", recorded={"done": done},
                expected_inputs={"exposures/a_cal.fits": "1" * 64})
    assert task.resume_plan(run)[0] == []
    task.expected_inputs = {"exposures/a_cal.fits": "3" * 64}  # a unit was redone: mosaic again
    assert task.resume_plan(run)[0] == ["mosaic"]


def test_a_resumed_run_must_use_the_recorded_config(tmp_path):
    run = RunDir.create(tmp_path / "run")
    a = parse_config("instrument: {readout: {ngroups: 4}}\n", tmp_path / "a.yaml")
    prepare.check_same_config(run, a)
    assert run.config.read_text() == a.text
    prepare.check_same_config(run, parse_config("# same, reformatted\ninstrument:\n  readout: {ngroups: 4}\n",
                                               tmp_path / "b.yaml"))
    with pytest.raises(UserError, match=r"instrument\.readout\.ngroups: 4 -> 5.*new --out"):
        prepare.check_same_config(run, parse_config("instrument: {readout: {ngroups: 5}}\n", tmp_path / "c.yaml"))
    # nothing finished yet (e.g. the first attempt stopped on a config error): the corrected config replaces it
    prepare.check_same_config(run, parse_config("instrument: {readout: {ngroups: 5}}\n", tmp_path / "c.yaml"),
                             anything_done=False)
    assert "ngroups: 5" in run.config.read_text()


def _journal_unit(j: JournalWriter, uid: str, end: str | None, stage: str = "detector1") -> None:
    j.write("unit_start", uid, stage="simulate", log=f"logs/{uid}.log")
    j.write("step", uid, stage="simulate", step="seed", status="start")
    j.write("step", uid, stage="simulate", step="seed", status="done")
    j.write("stage_done", uid, stage="simulate", inputs={}, outputs={f"exposures/{uid}_uncal.fits": "a" * 64},
            wall_s=2.0, cpu_s=1.5, peak_rss_mb=400.0, start="2024-01-01T00:00:00+00:00")
    j.write("step", uid, stage=stage, step="jump", status="start")
    if end == "failed":
        j.write("unit_failed", uid, stage=stage, step="jump", error="ValueError: bad ramp")
    elif end == "done":
        j.write("unit_done", uid, outputs={}, wall_s=3.0, peak_rss_mb=400.0)


def test_status_reads_states_from_the_journal_of_all_attempts(tmp_path):
    run = RunDir.create(tmp_path / "run")
    (run.plan).write_text(json.dumps({"units": [{"unit_id": f"u{i}", "est_cpu_s": 1.0} for i in range(4)]}))
    dead = JournalWriter(run.journal, 1)
    dead.write("run_start", None, mpi_size=2, hosts=["h"])
    _journal_unit(dead, "u0", "done")
    _journal_unit(dead, "u1", "failed")
    _journal_unit(dead, "u2", None)  # killed mid-unit
    dead.close()
    # make that file look like it came from a process that no longer exists
    path = dead.path
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(rec["pid"] == os.getpid() for rec in lines)
    view = read_run(run)
    assert view.running  # our own (live) pid wrote it and no run_end yet
    live = JournalWriter(run.journal, 0)
    live.write("run_end", None, status="failed", n_done=1, n_failed=1)
    live.close()
    view = read_run(run)
    assert view.units["u0"].status == "done"
    assert (view.units["u1"].status, view.units["u1"].stage, view.units["u1"].step) == ("failed", "detector1", "jump")
    assert view.units["u1"].error == "ValueError: bad ramp"
    assert view.units["u3"].status == "pending"
    counts = stage_counts(view)
    assert counts["simulate"]["done"] == 3 and counts["detector1"]["failed"] == 1
    assert not tasks.verify_outputs(run, view.units["u0"].done["outputs"])  # nothing recorded: not done
    costs = runstate.measured_unit_costs(run)
    assert costs["u0"]["peak_rss_mb"] == 400.0 and costs["u0"]["stages"]["simulate"]["cpu_s"] == 1.5


def test_status_command_and_timeline_png(tmp_path, capsys):
    from dream_hpc.cli import main
    from dream_hpc.engine.timeline import collect

    run = RunDir.create(tmp_path / "run")
    j = JournalWriter(run.journal, 0)
    j.write("run_start", None, mpi_size=1, hosts=["h"], launcher="none")
    _journal_unit(j, "u0", "done")
    _journal_unit(j, "u1", "failed")
    j.write("run_end", None, status="failed", n_done=1, n_failed=1)
    j.close()
    png = tmp_path / "t.png"
    assert main(["status", str(run.root), "--timeline", str(png)]) == 0
    out = capsys.readouterr().out
    assert "finished with status failed" in out and "u1" in out and "jump" in out and "ValueError" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows, bars, _ = collect(run)
    assert len(rows) == 1 and [b.mark for b in bars if b.unit == "u1"][-1] == "failed"
    assert main(["status", str(tmp_path)]) == 2  # not a run directory: one-line error


def test_progress_line_counts_and_eta():
    import io

    stream = io.StringIO()
    p = Progress({"a": 10.0, "b": 10.0, "c": 20.0}, stream, interval_s=0.0, n_mosaics=1)
    p.on_start("a", "simulate")
    p.on_stage_done("a", "simulate")
    p.on_stage("a", "detector1")
    assert "simulate 1" in p.text() and "detector1 0 +1 run" in p.text()
    p.on_outcome(Outcome("a", "unit", "done"))
    p.on_outcome(Outcome("b", "unit", "failed", stage="image2", step="photom", error="KeyError: x"))
    assert "units 1/3 done, 1 failed" in p.text() and "ETA" in p.text()
    assert "unit b failed in image2/photom: KeyError: x" in stream.getvalue()
    # a tiled mosaic: its tasks show by phase; only the filter's merge counts as the mosaic
    for key in ("mosaic_F150W/astrometry/o001v001", "mosaic_F150W/astrometry/o001v002", "mosaic_F150W/tile/r0c0"):
        p.on_outcome(Outcome(key, "mosaic", "done"))
    assert "mosaic 0/1 (astrometry 2, tile 1 done)" in p.text()
    p.on_outcome(Outcome("mosaic_F150W", "mosaic", "done"))
    assert "mosaic 1/1" in p.text()


def test_fault_hook_syntax_is_checked():
    (f,) = parse_faults("jw1_nrcb1:detector1:jump:hang")
    assert (f.unit, f.stage, f.step, f.action) == ("jw1_nrcb1", "detector1", "jump", "hang")
    assert parse_faults("*:simulate:truncate")[0].step is None
    with pytest.raises(ValueError, match="DREAM_HPC_TEST_FAULT"):
        parse_faults("u:detector1:explode")


def test_second_run_on_the_same_directory_refuses(tmp_path, capsys):
    from dream_hpc.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("survey: {name: x}\n")
    run = RunDir.create(tmp_path / "run")
    with run.lock("first run"):
        assert main(["run", str(cfg), "--out", str(run.root)]) == 2
    assert "already in use by first run" in capsys.readouterr().err


def _load_sim():
    spec = importlib.util.spec_from_file_location("scheduler_sim", ROOT / "bench" / "scheduler_sim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_simulated_makespan_stays_within_the_longest_first_bound():
    sim = _load_sim()
    costs = [37, 5, 22, 8, 8, 60, 13, 2, 41, 19, 7, 30, 11, 3, 50, 26]
    tasks = [unit_task(unit(i + 1, cost=c)) for i, c in enumerate(costs)]
    for ranks in (1, 2, 3, 5, 8):
        r = sim.simulate(tasks, ranks, latency_s=0.0, mosaic_seconds=lambda units: 0.0)
        assert r["units_makespan"] >= r["units_lower_bound"] - 1e-9
        # Graham: longest-first is within 4/3 - 1/(3m) of the optimum, which is >= the lower bound
        assert r["units_makespan"] <= (4 / 3 - 1 / (3 * ranks)) * r["units_lower_bound"] * 1.0001
    assert sim.simulate(tasks, 1, latency_s=0.0, mosaic_seconds=lambda units: 0.0)["units_makespan"] == sum(costs)


def test_derived_time_limits_follow_the_measured_pace():
    import io

    units = [unit(i, cost=10.0) for i in range(1, 6)]
    sched = Scheduler([Task(u.unit_id, "unit", 10.0, 300.0, unit=u) for u in units])
    coord = coordinator.Coordinator(None, sched, None, Progress({}, io.StringIO()), None)
    coord.timeout_factor = 10.0
    for _ in range(3):
        t = coord._next()
        assert t.limit_s == 300.0  # min_timeout_s-based limit until the pace is known
        sched.complete(Outcome(t.key, "unit", "done", wall_s=80.0))  # 8x slower than planned
    assert coord.slowness() == 8.0
    assert coord._next().limit_s == 800.0


def test_order_is_chosen_by_replaying_the_scheduler():
    def tasks(tails):
        return [unit_task(unit(i, f, cost=10.0), tail=tails[f]) for f in ("F150W", "F277W") for i in range(1, 7)]

    alike = {"F150W": 60.0, "F277W": 50.0}  # similar mosaics, 2 ranks: finish both filters last, mosaic in parallel
    ts = tasks(alike)
    order, predicted = scheduler.choose_order(ts, 2, mosaic_seconds=lambda us: alike[us[0].filter])
    assert order == "longest-first" and predicted["longest-first"] < predicted["longest-path-first"]
    assert all(t.tail == 0.0 for t in ts)
    skewed = {"F150W": 200.0, "F277W": 5.0}  # one long Image3 and many ranks: start it early
    ts = tasks(skewed)
    order, predicted = scheduler.choose_order(ts, 6, mosaic_seconds=lambda us: skewed[us[0].filter])
    assert order == "longest-path-first" and predicted["longest-path-first"] < predicted["longest-first"]
    assert scheduler.replay(ts, 6, mosaic_seconds=lambda us: skewed[us[0].filter])["makespan"] == pytest.approx(
        predicted["longest-path-first"])
