"""The scheduler-neutral engine: dynamic scheduling over ranks, worker isolation, time limits, resume.

The same code runs serially (one process), under `mpiexec` and under `srun`: `mpi.world()` gives a
communicator (serial or MPI) and this module only ever asks it to send, poll, broadcast and gather.
Rank 0 hands out tasks on request, longest expected first, so a slow unit never leaves other ranks
idle; a task is one unit (simulate -> detector1 -> image2) or, once all units of a filter have
ended, exactly one Image3 mosaic of that filter. Each rank computes in a worker subprocess
(`worker.py`, driven by `executor.py`) and journals what happened; a finished unit is recognised on resume by the checksums
in its journal records, verified against the files on disk.
"""
