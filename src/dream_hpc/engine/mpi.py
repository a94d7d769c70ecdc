"""The MPI edge: the only module that imports mpi4py; the engine sees a small `Comm` either way.

`world()` returns an MPI communicator when a launcher (mpiexec, `srun --mpi=pmi2`) started this
process, else a serial one, so `dream-hpc run` behaves the same with or without MPI. Waiting is done
by polling with short sleeps: MPICH's blocking calls spin a core at 100%, which on a node full of
single-threaded ranks would steal the CPU the science needs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from dream_hpc.core.errors import UserError

# Set by process managers for each rank they start (Hydra/PMI-1, Slurm pmi2, PMIx, Open MPI).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")
TAG_CONTROL = 11
TAG_WORK = 12
_POLL_MIN_S = 0.002
_POLL_FAST_FOR_S = 0.5
_POLL_MAX_S = 0.05


def launched_under_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


def _slurm_tasks() -> int:
    if "SLURM_STEP_ID" not in os.environ:  # inside an allocation but not started by srun
        return 1
    try:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
    except ValueError:
        return 1


class SerialComm:
    """One process, no MPI: rank 0 of 1."""

    rank = 0
    size = 1
    launcher = "none"

    def send(self, obj: Any, dest: int) -> None:
        raise RuntimeError("a serial run has no other rank to send to")

    def poll(self) -> list[tuple[int, Any]]:
        return []

    def wait(self, source: int) -> Any:
        raise RuntimeError("a serial run has no other rank to wait for")

    def bcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def abort(self, code: int = 1) -> None:
        os._exit(code)


class MPIComm:
    """COMM_WORLD through mpi4py, with polling receives (no busy-wait inside MPI)."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.launcher = "srun" if "SLURM_STEP_ID" in os.environ else "mpiexec"

    def send(self, obj: Any, dest: int, tag: int = TAG_WORK) -> None:
        self.comm.send(obj, dest=dest, tag=tag)

    def poll(self, tag: int = TAG_WORK) -> list[tuple[int, Any]]:
        """Every message already arrived, as (source, object), without blocking."""
        out = []
        status = self._mpi.Status()
        while self.comm.iprobe(source=self._mpi.ANY_SOURCE, tag=tag, status=status):
            source = status.Get_source()
            out.append((source, self.comm.recv(source=source, tag=tag)))
        return out

    def wait(self, source: int, tag: int = TAG_WORK) -> Any:
        """The next message from `source`, sleeping between probes: every 2 ms while a reply is
        likely imminent (a task after a result), then backing off to 50 ms."""
        t0 = time.monotonic()
        pause = _POLL_MIN_S
        while not self.comm.iprobe(source=source, tag=tag):
            time.sleep(pause)
            if time.monotonic() - t0 > _POLL_FAST_FOR_S:
                pause = min(pause * 2, _POLL_MAX_S)
        return self.comm.recv(source=source, tag=tag)

    def bcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (point to point, so waiting ranks sleep rather than spin)."""
        if self.rank == 0:
            for dest in range(1, self.size):
                self.send(obj, dest, TAG_CONTROL)
            return obj
        return self.wait(0, TAG_CONTROL)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if self.rank != 0:
            self.send(obj, 0, TAG_CONTROL)
            return None
        return [obj] + [self.wait(src, TAG_CONTROL) for src in range(1, self.size)]

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def world() -> SerialComm | MPIComm:
    """The communicator for this process: MPI when launched by an MPI launcher, else serial."""
    tasks = _slurm_tasks()
    if launched_under_mpi():
        comm = MPIComm()
        if comm.size == 1 and tasks > 1:
            raise UserError(f"srun started {tasks} tasks but each sees MPI size 1: launch with "
                            "`srun --mpi=pmi2` (or set MpiDefault=pmi2 in slurm.conf)")
        return comm
    if tasks > 1:
        raise UserError(f"srun started {tasks} tasks without an MPI plugin, so every task would run the "
                        "whole survey: launch with `srun --mpi=pmi2 dream-hpc run ...`")
    return SerialComm()
