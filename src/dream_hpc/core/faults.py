"""The documented test hook for faults a survey really meets: SIGKILL and a full disk, at a named point.

Off unless ``DREAM_HPC_TEST_FAULT`` is set (engine/worker.py documents its syntax for the stages).
Entries ``run:<point>:<action>`` act in the process writing the run's own records, at ``provenance``
(inside the write of provenance.h5) and ``summary`` (inside the write of summary.json). Actions:

- ``kill``: SIGKILL this process (and, in a worker, its rank): a node lost mid-write;
- ``full``: fill the filesystem holding the run (a file ``FILL_NAME`` beside the run directory), so
  the writes that follow fail with a real ENOSPC. Refused on a filesystem bigger than
  ``MAX_FILL_BYTES``: the tests run it on a small tmpfs, never on a real disk.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

FAULT_ENV = "DREAM_HPC_TEST_FAULT"
FILL_NAME = ".dream-hpc-test-fill"
MAX_FILL_BYTES = 4 << 30


def kill_now(also_parent: bool = False) -> None:
    """SIGKILL this process (first its parent, e.g. the rank that started this worker)."""
    if also_parent:
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def fill_filesystem(run_root: Path) -> Path:
    """Write zeros beside `run_root` until its filesystem is full; returns the filler file."""
    st = os.statvfs(run_root)
    if st.f_blocks * st.f_frsize > MAX_FILL_BYTES:
        raise RuntimeError(f"{FAULT_ENV}: refusing to fill {run_root}'s filesystem "
                           f"({st.f_blocks * st.f_frsize / 2**30:.0f} GiB; the hook fills small test filesystems only)")
    filler = Path(run_root).parent / FILL_NAME
    block = b"\0" * (1 << 20)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return filler


def at(point: str, run_root: Path) -> None:
    """Act if DREAM_HPC_TEST_FAULT names `run:<point>:<action>` (see the module docstring)."""
    for item in filter(None, (s.strip() for s in os.environ.get(FAULT_ENV, "").split(","))):
        parts = item.split(":")
        if len(parts) == 3 and parts[0] == "run" and parts[1] == point:
            if parts[2] == "kill":
                kill_now()
            elif parts[2] == "full":
                fill_filesystem(run_root)
