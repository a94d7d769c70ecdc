"""The run lock across hosts of a shared file system (dream_hpc.core.runlock): what counts as stale.

Other hosts are written as records (the lock file's contents and mtime are all another host
leaves on a shared file system); Slurm's view comes from a stand-in `scontrol` on PATH.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dream_hpc.core import runlock
from dream_hpc.core.rundir import RunDir, RunDirError
from dream_hpc.core.runlock import Holder, LockBusy, RunLock


def other_host(**changes) -> Holder:
    base = Holder(what="dream-hpc run (MPI size 2)", host="node-elsewhere", boot_id="b00t", pid=4242,
                  pid_start="777", job_id="", restart=0, since="2026-01-01T00:00:00+0000")
    return dataclasses.replace(base, **changes)


def leave(root: Path, holder: Holder, age_s: float) -> Path:
    """A lock file as a holder that stopped `age_s` seconds ago leaves it."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    path.write_text(json.dumps(dataclasses.asdict(holder)) + "\n")
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


@pytest.fixture
def messages() -> list[str]:
    return []


def lock(root: Path, messages: list[str], stale: float = 1.0) -> RunLock:
    return RunLock(root, "test run", heartbeat_s=0.1, stale_after_s=stale, log=messages.append)


@pytest.fixture
def scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a fake scontrol on PATH that reports `state` for every job."""
    def install(state: str, restarts: int = 0) -> None:
        bindir = tmp_path / "fakebin"
        bindir.mkdir(exist_ok=True)
        exe = bindir / "scontrol"
        exe.write_text(f"#!/bin/sh\necho \"JobId=$4 JobState={state} Restarts={restarts}\"\n")
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return install


def test_second_holder_on_this_machine_refuses_and_clean_release_empties(tmp_path: Path, messages) -> None:
    with lock(tmp_path, messages):
        record = json.loads((tmp_path / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == os.uname().nodename and record["boot_id"]
        with pytest.raises(LockBusy, match="already in use by test run"):
            lock(tmp_path, messages).acquire()
    assert (tmp_path / ".lock").read_text() == ""


def test_heartbeat_moves_the_mtime(tmp_path: Path, messages) -> None:
    with lock(tmp_path, messages):
        first = (tmp_path / ".lock").stat().st_mtime_ns
        time.sleep(0.5)
        assert (tmp_path / ".lock").stat().st_mtime_ns > first


def test_lock_of_a_killed_process_here_is_taken_at_once(tmp_path: Path, messages) -> None:
    code = (f"from dream_hpc.core.runlock import RunLock; import time; l = RunLock({str(tmp_path)!r}, 'victim');"
            "l.acquire(); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert json.loads((tmp_path / ".lock").read_text())["what"] == "victim"  # left behind
    t0 = time.monotonic()
    with lock(tmp_path, messages, stale=60):
        assert time.monotonic() - t0 < 5
    assert any("taking over the lock of victim" in m and "process is gone" in m for m in messages)


def test_other_host_with_a_fresh_heartbeat_refuses_at_once(tmp_path: Path, messages) -> None:
    leave(tmp_path, other_host(), age_s=0)
    t0 = time.monotonic()
    with pytest.raises(LockBusy, match="pid 4242 on node-elsewhere.*heartbeat 0 s old"):
        lock(tmp_path, messages, stale=30).acquire()
    assert time.monotonic() - t0 < 5


def test_other_host_with_an_old_heartbeat_and_no_job_is_stale(tmp_path: Path, messages) -> None:
    leave(tmp_path, other_host(), age_s=600)
    with lock(tmp_path, messages, stale=120):
        pass
    assert any("heartbeat 600 s old" in m and "Slurm cannot tell" in m for m in messages)


def test_old_heartbeat_but_slurm_says_running_is_not_stale(tmp_path: Path, messages, scontrol) -> None:
    scontrol("RUNNING")
    leave(tmp_path, other_host(job_id="77"), age_s=600)
    with pytest.raises(LockBusy, match="Slurm says its job is running"):
        lock(tmp_path, messages, stale=0.5).acquire()
    assert any("waiting for the lock" in m for m in messages)  # bounded wait, then refuse


def test_old_heartbeat_and_slurm_says_ended_is_stale(tmp_path: Path, messages, scontrol) -> None:
    scontrol("NODE_FAIL")
    leave(tmp_path, other_host(job_id="77"), age_s=600)
    with lock(tmp_path, messages, stale=120):
        pass
    assert any("Slurm says its job attempt ended" in m for m in messages)


def test_requeued_attempt_waits_for_the_dead_attempts_heartbeat(tmp_path: Path, messages, scontrol,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The same job, restarted after its node died: Slurm runs one attempt at a time, so the old
    attempt has ended; its heartbeat must still go stale (it may live on, cut off from slurmctld)."""
    scontrol("RUNNING", restarts=1)  # the requeued job itself is running
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    leave(tmp_path, other_host(job_id="77", restart=0), age_s=0.3)
    t0 = time.monotonic()
    with lock(tmp_path, messages, stale=1.5):
        waited = time.monotonic() - t0
    assert 0.8 < waited < 5, waited
    assert any("waiting for the lock" in m for m in messages)
    assert any("taking over" in m and "job attempt ended" in m for m in messages)


def test_a_heartbeat_that_comes_back_means_alive(tmp_path: Path, messages, scontrol) -> None:
    scontrol("COMPLETED")
    path = leave(tmp_path, other_host(job_id="77"), age_s=0.5)
    holder = lock(tmp_path, messages, stale=2.0)
    fd = os.open(path, os.O_RDONLY)
    try:
        verdict, _ = holder.judge(runlock.parse(path.read_text()), flock=True)
        assert verdict == "wait"
        os.utime(path)  # the holder beats again: it was only slow
        verdict, why = holder.judge(runlock.parse(path.read_text()), flock=True)
        assert verdict == "wait" and "heartbeat 0 s old" in why  # Slurm says ended: never 'alive', keep waiting
    finally:
        os.close(fd)


def test_same_host_name_after_a_reboot_is_stale(tmp_path: Path, messages) -> None:
    leave(tmp_path, other_host(host=os.uname().nodename, boot_id="an-earlier-boot"), age_s=0)
    with lock(tmp_path, messages, stale=600):
        pass
    assert any("rebooted since" in m for m in messages)


def test_without_flock_a_live_pid_here_holds(tmp_path: Path, messages, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lustre mounted `noflock` answers flock with ENOSYS: the record alone decides."""
    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")
    monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        me = runlock.this_process("live elsewhere in this machine")
        leave(tmp_path, dataclasses.replace(me, pid=sleeper.pid, pid_start=runlock.pid_start(sleeper.pid)), age_s=0)
        with pytest.raises(LockBusy, match=f"pid {sleeper.pid} is running here"):
            lock(tmp_path, messages).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with lock(tmp_path, messages):  # now dead: stale
        pass
    assert any("no longer running here" in m for m in messages)


def test_rundir_lock_reports_one_line(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run")
    leave(run.root, other_host(), age_s=0)
    with (pytest.raises(RunDirError, match=r"already in use by dream-hpc run \(MPI size 2\), pid 4242 on node-elsewhere"),
          run.lock("second")):
        pass


def test_a_lock_line_from_an_older_dream_hpc_here_is_freed_by_flock(tmp_path: Path, messages) -> None:
    (tmp_path / ".lock").write_text(f"dream-hpc run (MPI size 2) pid 999999 on {os.uname().nodename}\n")
    with lock(tmp_path, messages, stale=600):
        pass
    assert any("taking over the lock of dream-hpc run (MPI size 2), pid 999999" in m for m in messages)
