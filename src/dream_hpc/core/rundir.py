"""The run directory: where every product lives, atomic writes, checksums and the run lock.

Layout (all paths relative to RUN)::

    config.yaml            the config as run (verbatim)
    plan.json              the work units
    inputs/<unit>/         per-unit Mirage yaml and source lists
    exposures/             *_uncal.fits, *_rate.fits, *_cal.fits (jwst names)
    mosaic/                <product>_i2d.fits, _segm.fits, _cat.ecsv, <filter>_asn.json
    logs/                  one log per unit and per mosaic
    journal/               append-only, hash-chained records, one file per rank and attempt
    figures/               footprint.png, timeline.png, mosaic_<filter>.png
    provenance.h5          consolidated record (written by one process only)
    summary.json           headline numbers of the run
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUBDIRS = ("inputs", "exposures", "mosaic", "logs", "journal", "figures")


class RunDirError(RuntimeError):
    """A problem with the run directory, phrased as one line with the fix."""


# What a run directory holds (besides SUBDIRS): a directory with only these is a dream-hpc run.
RUN_FILES = ("config.yaml", "plan.json", "provenance.h5", "summary.json", ".lock", "STOP", "reproduce.json")


def is_run_dir(path: Path) -> bool:
    """A dream-hpc run (or the start of one): its plan or journal exists, or it holds nothing else."""
    if (path / "plan.json").is_file() or (path / "journal").is_dir():
        return True
    return all(name in SUBDIRS or name in RUN_FILES or name.startswith(".tmp-") for name in os.listdir(path))


def refuse_unsafe_out(root: str | Path) -> Path:
    """`--out` for a command that writes a run: never `/`, the home directory, a file, or a non-empty
    directory that is not a dream-hpc run (a run writes config.yaml, logs/, figures/ ... into it)."""
    p = Path(root).expanduser().resolve()
    example = "give a new directory, e.g. --out runs/NAME"
    if p == Path(p.anchor):
        raise RunDirError(f"--out {root}: refusing to write a run into the root directory; {example}")
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        home = None
    if p == home:
        raise RunDirError(f"--out {root}: refusing to write a run into the home directory {p}; {example}")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {root}: {p} exists and is not a directory; {example}")
    if p.is_dir() and not is_run_dir(p):
        entries = sorted(os.listdir(p))
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise RunDirError(f"--out {root}: {p} is not empty and is not a dream-hpc run (it holds {shown}); "
                          f"{example} or an empty one")
    return p


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def create(cls, root: str | Path) -> RunDir:
        run = cls(refuse_unsafe_out(root))
        for sub in SUBDIRS:
            (run.root / sub).mkdir(parents=True, exist_ok=True)
        return run

    # well-known paths
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def exposures(self) -> Path:
        return self.root / "exposures"

    @property
    def mosaic(self) -> Path:
        return self.root / "mosaic"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.h5"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def unit_inputs(self, unit_id: str) -> Path:
        return self.inside(self.root / "inputs" / unit_id)

    def inside(self, path: str | Path) -> Path:
        """`path` resolved, refusing anything that escapes the run directory (e.g. '../x')."""
        p = (self.root / path).resolve()
        if p != self.root and self.root not in p.parents:
            raise RunDirError(f"{path}: path is outside the run directory {self.root} "
                              "(use a path inside the run directory)")
        return p

    def rel(self, path: str | Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    @contextlib.contextmanager
    def lock(self, what: str = "run") -> Iterator[None]:
        """Exclusive lock on the run directory: a second run on the same RUN refuses at once; a lock
        left by a killed process or a dead host is recognised as stale (dream_hpc.core.runlock)."""
        from dream_hpc.core.runlock import LockBusy, RunLock

        self.root.mkdir(parents=True, exist_ok=True)
        try:
            lock = RunLock(self.root, what)
            lock.acquire()
        except LockBusy as e:
            raise RunDirError(str(e)) from None
        try:
            yield
        finally:
            lock.release()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds.

    A process killed mid-write leaves a `.tmp-*` file that never counts as a product.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; products are for collaborators too (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(final: str | Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)
