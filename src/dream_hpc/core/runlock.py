"""The run lock: one writer per run directory, also across the hosts of a shared file system.

`RUN/.lock` holds a one-line JSON record of its holder (host, boot id, pid and its start time,
Slurm job id and restart count, what it is) and the holder refreshes the file's mtime every
`heartbeat_s` (the heartbeat). The holder also takes `flock` on it where the file system supports
that. A clean release empties the record; a killed holder leaves it behind.

Taking the lock, when `flock` says nobody holds it (or the file system has no flock: Lustre
mounted `noflock`, some NFS setups) and a record is left:

- the holder ran on this machine (same host name and boot id): flock is authoritative on one
  kernel, so a free flock means the holder is gone; without flock, the pid with the recorded
  start time must no longer exist;
- same host name, other boot id: the machine rebooted since, so every process of it is gone;
- another host: the lock is stale only when BOTH its heartbeat is older than `stale_after_s`
  (measured on the file system's clock, not this host's: the mtime of a file made now beside it)
  AND Slurm does not say the holder's job attempt is running (a later attempt of the same job,
  or `scontrol` reports it ended or no longer knows it). Each signal alone can be wrong in the
  dangerous direction: a heartbeat stops while the holder lives on (a stalled file-system client,
  a stopped process), and Slurm marks a job's node DOWN and requeues it while processes on that
  node, cut off from slurmctld but not from storage, keep writing. Those keep their heartbeat
  fresh, so the lock stays theirs. Where Slurm cannot be asked (no scontrol, no job recorded),
  the heartbeat alone decides.

A record from another host whose heartbeat is fresh (younger than two intervals) refuses at once:
another run is alive. One in between is waited for, boundedly (until it is stale, refreshed or
`stale_after_s` plus two intervals have passed), so a job requeued after its node died starts
as soon as the dead holder's lock is provably stale instead of failing or blocking forever.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0
SLURM_ALIVE = {"RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STOPPED", "SIGNALING", "STAGE_OUT",
               "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED"}
NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class LockBusy(RuntimeError):
    """The run directory is in use (message names the holder and what to do)."""


@dataclass(frozen=True)
class Holder:
    what: str
    host: str
    boot_id: str
    pid: int
    pid_start: str  # /proc/<pid>/stat start time (clock ticks since boot): tells a reused pid apart
    job_id: str
    restart: int
    since: str

    def describe(self) -> str:
        job = f", Slurm job {self.job_id} (restart {self.restart})" if self.job_id else ""
        return f"{self.what}, pid {self.pid} on {self.host}{job}, since {self.since}"

    def same_machine(self) -> bool:
        return self.host == os.uname().nodename and self.boot_id == boot_id()


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_start(pid: int) -> str:
    """Start time of `pid` ('' if there is no such process): field 22 of /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def this_process(what: str) -> Holder:
    return Holder(what=what, host=os.uname().nodename, boot_id=boot_id(), pid=os.getpid(),
                  pid_start=pid_start(os.getpid()), job_id=os.environ.get("SLURM_JOB_ID", ""),
                  restart=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                  since=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def parse(text: str) -> Holder | None:
    """The record in a lock file; None for an empty one. Older dream-hpc wrote "WHAT pid N on HOST"
    and never emptied it: read as a holder on HOST (this machine when the name is ours, so flock
    decides), else on an unknown host, which only the heartbeat can free."""
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return Holder(**{k: data[k] for k in Holder.__dataclass_fields__})
    except (ValueError, KeyError, TypeError):
        old = re.fullmatch(r"(.*) pid (\d+) on (\S+)", text)
        what, pid, host = (old.group(1), int(old.group(2)), old.group(3)) if old else (text[:200], 0, "?")
        here = host == os.uname().nodename
        return Holder(what=what, host=host, boot_id=boot_id() if here else "", pid=pid,
                      pid_start=pid_start(pid) if here and pid else "", job_id="", restart=0, since="?")


def slurm_attempt_state(holder: Holder) -> str:
    """'running', 'ended' or 'unknown': what Slurm says of the holder's job attempt."""
    if not holder.job_id:
        return "unknown"
    here = os.environ.get("SLURM_JOB_ID", "")
    if here == holder.job_id and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > holder.restart:
        return "ended"  # this process is a later attempt of that job: Slurm runs one attempt at a time
    if shutil.which("scontrol") is None:
        return "unknown"
    try:
        done = subprocess.run(["scontrol", "show", "job", "-o", holder.job_id], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if done.returncode != 0:
        return "ended" if "Invalid job id" in done.stderr else "unknown"
    fields = dict(f.split("=", 1) for f in done.stdout.split() if "=" in f)
    if int(fields.get("Restarts", "0") or 0) > holder.restart:
        return "ended"
    return "running" if fields.get("JobState", "") in SLURM_ALIVE else "ended"


def fs_age(path: Path) -> float:
    """Seconds since `path` was last modified, on the clock of the file system that holds it (NFS
    and Lustre set mtimes from the server's clock; node clocks may disagree)."""
    fd, probe = tempfile.mkstemp(prefix=".lock-clock-", dir=path.parent)
    try:
        now = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(probe)
    return max(0.0, now - path.stat().st_mtime)  # coarse file timestamps can put "now" a tick behind


class RunLock:
    """Exclusive lock on a run directory (see the module doc). Use as a context manager."""

    def __init__(self, root: Path, what: str, heartbeat_s: float | None = None,
                 stale_after_s: float | None = None, log=None) -> None:
        self.path = Path(root) / ".lock"
        self.what = what
        env_stale = os.environ.get("DREAM_LOCK_STALE_S")
        self.stale_after_s = stale_after_s or (float(env_stale) if env_stale else STALE_AFTER_S)
        self.heartbeat_s = heartbeat_s or min(HEARTBEAT_S, self.stale_after_s / 6)
        self.log = log or (lambda msg: print(f"dream-hpc: {msg}", file=sys.stderr, flush=True))
        self.fd = -1
        self.me: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- taking and releasing ----------------------------------------------------------------
    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flock = self._flock()
            deadline = time.monotonic() + self.stale_after_s + 2 * self.heartbeat_s
            while (holder := parse(os.pread(self.fd, 4096, 0).decode(errors="replace"))) is not None:
                verdict, why = self.judge(holder, flock)
                if verdict == "stale":
                    self.log(f"{self.path.parent}: taking over the lock of {holder.describe()}: {why}")
                    break
                if verdict == "alive" or time.monotonic() > deadline:
                    raise LockBusy(f"{self.path.parent}: already in use by {holder.describe()} ({why}); wait for it "
                                   f"to finish, or use another --out; if that process is certainly dead, remove "
                                   f"{self.path}")
                self.log(f"{self.path.parent}: waiting for the lock of {holder.describe()} ({why})")
                time.sleep(self.heartbeat_s)
            self.me = this_process(self.what)
            self._write(json.dumps(asdict(self.me)) + "\n")
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()

    def release(self) -> None:
        if self.fd < 0:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            if self.me is not None and parse(os.pread(self.fd, 4096, 0).decode(errors="replace")) == self.me:
                os.ftruncate(self.fd, 0)  # released cleanly: nothing for the next run to judge
        finally:
            os.close(self.fd)  # closing releases the flock, also when the process is killed
            self.fd = -1

    def _flock(self) -> bool:
        """Take flock; False where the file system has none. A held flock is a live holder."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = parse(os.pread(self.fd, 4096, 0).decode(errors="replace"))
            who = holder.describe() if holder else "another process"
            raise LockBusy(f"{self.path.parent}: already in use by {who} (wait for it to finish, "
                           "or use another --out)") from None
        except OSError as e:
            if e.errno in NO_FLOCK:
                return False
            raise

    def _write(self, text: str) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)
        os.fsync(self.fd)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):  # a passing file-system error: the next beat tries again
                os.utime(self.fd)  # the heartbeat: mtime, set from the file system's clock

    # --- is a left-behind record's holder alive? -----------------------------------------------
    def judge(self, holder: Holder, flock: bool) -> tuple[str, str]:
        """('stale' | 'alive' | 'wait', why) for a record left in the lock file."""
        if holder.same_machine():
            if flock:
                return "stale", "its process is gone (the lock was free on this machine)"
            if holder.pid_start and pid_start(holder.pid) == holder.pid_start:
                return "alive", f"pid {holder.pid} is running here"
            return "stale", f"pid {holder.pid} is no longer running here"
        if holder.host == os.uname().nodename and holder.boot_id and holder.boot_id != boot_id():
            return "stale", f"{holder.host} has rebooted since"
        age = fs_age(self.path)
        slurm = slurm_attempt_state(holder)
        said = {"running": "Slurm says its job is running", "ended": "Slurm says its job attempt ended",
                "unknown": "Slurm cannot tell"}[slurm]
        if age > self.stale_after_s and slurm != "running":
            return "stale", f"heartbeat {age:.0f} s old (stale after {self.stale_after_s:.0f} s), {said}"
        if age < 2 * self.heartbeat_s and slurm != "ended":
            return "alive", f"heartbeat {age:.0f} s old, {said}"
        return "wait", f"heartbeat {age:.0f} s old (stale after {self.stale_after_s:.0f} s), {said}"
