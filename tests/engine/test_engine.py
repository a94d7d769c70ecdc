"""The real engine on the real chain (Mirage + jwst) under `mpiexec -n 2`: failure isolation, time
limits, a rank killed with SIGKILL, and resume that redoes only what did not finish.

Faults are injected through the documented test hook DREAM_HPC_TEST_FAULT (see worker.py):
`truncate` cuts a real uncal in half after Mirage wrote it, so jwst meets a genuinely corrupt file;
`hang` sleeps inside the real jwst jump step, so the time limit must stop it there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _engine_fixtures import MPIEXEC, dream_run, engine_env, wait_for

from dream_hpc.core.digests import sha256_file
from dream_hpc.core.journal import journal_files, read_file
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import read_run

pytestmark = [pytest.mark.slow, pytest.mark.mpi]
ROOT = Path(__file__).resolve().parents[2]


def records(run: Path) -> list[dict]:
    out = []
    for f in journal_files(run / "journal"):
        jf = read_file(f)
        recs, problems = jf.records, jf.problems
        assert not problems, problems
        out.extend(recs)
    return sorted(out, key=lambda r: r["time"])


def attempts(run: Path) -> list[list[dict]]:
    """Records split by attempt (each attempt starts with rank 0's run_start)."""
    recs = records(run)
    starts = [r["time"] for r in recs if r["kind"] == "run_start"]
    return [[r for r in recs if start <= r["time"] < (starts[i + 1] if i + 1 < len(starts) else "~")]
            for i, start in enumerate(starts)]


def unit_ids(run: Path) -> list[str]:
    return [u["unit_id"] for u in json.loads((run / "plan.json").read_text())["units"]]


def assert_complete(run: Path) -> None:
    """Every unit done with products matching their journaled checksums, one mosaic per filter, no leftovers."""
    view = read_run(RunDir(run))
    assert {u.status for u in view.units.values()} == {"done"}, {k: u.status for k, u in view.units.items()}
    for u in view.units.values():
        for rel, sha in u.done["outputs"].items():
            assert sha256_file(run / rel) == sha, rel
    assert {m.filter: m.status for m in view.mosaics.values()} == {"F150W": "done", "F277W": "done"}
    assert len(list((run / "mosaic").glob("*_i2d.fits"))) == 2
    assert not list(run.rglob(".tmp-*"))
    assert (run / "figures" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_failing_and_hanging_units_are_isolated_then_resumed(engine_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ids = unit_ids_from_plan(engine_config)
    broken = next(u for u in ids if u.endswith("nrcb1"))
    hung = next(u for u in ids if u.endswith("nrcb5"))
    faults = f"{broken}:simulate:truncate,{hung}:detector1:jump:hang"
    cfg_text = engine_config.read_text()
    short = tmp_path / "survey.yaml"  # same survey, a shorter time limit: the hang is stopped sooner
    short.write_text(cfg_text.replace("unit_timeout_s: 150.0", "unit_timeout_s: 90.0"))
    assert "unit_timeout_s: 90.0" in short.read_text()
    for name in ("catalog.ecsv",):
        (tmp_path / name).symlink_to(engine_config.parent / name)

    proc = dream_run(short, out, 2, env=engine_env(DREAM_HPC_TEST_FAULT=faults))
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr
    # the table of failures names unit, stage, step and error; the mosaics say which units they lack
    assert f"{broken}" in err and f"{hung}" in err
    assert "timeout" in err and "jump" in err
    assert "mosaic F150W not run" in err and broken in err.split("mosaic F150W not run")[1]
    view = read_run(RunDir(out))
    assert view.units[broken].status == "failed" and view.units[broken].stage == "detector1"
    assert "_uncal" in (view.units[broken].error or "") or "uncal" in (view.units[broken].error or "").lower()
    assert (view.units[hung].status, view.units[hung].stage, view.units[hung].step) == ("timeout", "detector1", "jump")
    good = [u for u in ids if u not in (broken, hung)]
    assert all(view.units[u].status == "done" for u in good)
    assert (out / "logs" / f"{broken}.log").read_text().count("Traceback") >= 1
    assert not any(p.name.endswith("_i2d.fits") for p in (out / "mosaic").iterdir())
    done_before = {u: view.units[u].done["outputs"] for u in good}

    # resume with no faults: only the two unfinished units run, each from its first unverified stage
    proc = dream_run(short, out, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = attempts(out)[-1]
    started = {r["unit"]: r["data"]["stage"] for r in second if r["kind"] == "unit_start"}
    assert started == {broken: "simulate", hung: "detector1"}
    assert "2 already done (checksums verified)" in proc.stderr
    assert_complete(out)
    view = read_run(RunDir(out))
    assert {u: view.units[u].done["outputs"] for u in good} == done_before


def unit_ids_from_plan(config: Path) -> list[str]:
    code = ("import sys, json; from dream_hpc.config import load_config; from dream_hpc.plan.pointings import make_plan; "
            "print(json.dumps([u.unit_id for u in make_plan(load_config(sys.argv[1]))]))")
    proc = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, check=True)
    ids = json.loads(proc.stdout)
    assert len(ids) == 4
    return ids


def test_rank_killed_mid_run_then_plain_rerun_completes(engine_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "dream_hpc", "run", str(engine_config), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=engine_env(),
                            cwd=ROOT)
    try:
        def rank1_busy_after_a_unit_done():
            recs = records(out) if (out / "journal").is_dir() else []
            if not any(r["kind"] == "unit_done" for r in recs):
                return None
            mine = [r for r in recs if r["rank"] == 1]
            open_units = {r["unit"] for r in mine if r["kind"] == "unit_start"} - {
                r["unit"] for r in mine if r["kind"] in ("unit_done", "unit_failed", "unit_timeout")}
            # kill while rank 1 is inside a jwst step or Mirage phase of an unfinished unit
            if open_units and mine[-1]["kind"] == "step" and mine[-1]["data"]["status"] == "start":
                return mine[-1]["pid"]
            return None

        pid = wait_for(rank1_busy_after_a_unit_done, 600, "rank 1 busy in a step after a unit finished", 0.2)
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    view = read_run(RunDir(out))
    assert not view.running
    interrupted = {k for k, u in view.units.items() if u.status == "interrupted"}
    assert interrupted, {k: u.status for k, u in view.units.items()}
    done_before = {k: dict(u.done["outputs"]) for k, u in view.units.items() if u.status == "done"}
    assert done_before
    hashes_before = {rel: sha256_file(out / rel) for outs in done_before.values() for rel in outs}
    time.sleep(1)  # the killed rank's worker died with it (PR_SET_PDEATHSIG): nothing writes any more

    # `dream-hpc status` shows the interruption, for any user, without touching the run
    st = subprocess.run([sys.executable, "-m", "dream_hpc", "status", str(out)], capture_output=True, text=True,
                        env=engine_env())
    assert st.returncode == 0 and "interrupted" in st.stdout

    # the same command without any launcher (one process) finishes the survey
    rerun = dream_run(engine_config, out, None)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    second = attempts(out)[-1]
    redone = {r["unit"] for r in second if r["kind"] == "unit_start"}
    assert redone and not redone & set(done_before), (redone, set(done_before))
    assert interrupted <= redone
    assert_complete(out)
    assert {rel: sha256_file(out / rel) for rel in hashes_before} == hashes_before  # nothing finished was lost
