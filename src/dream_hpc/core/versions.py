"""Installed software versus the lock file (`dream-hpc versions --check` prints it).

The seed notes lost time to a jwst/stcal clash that surfaced as "ValueError: too many values to
unpack" deep inside a step. Here a mismatch is named before anything runs.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

# Packages whose versions decide the pixels: shown first and checked before every run.
KEY_PACKAGES = ("jwst", "stcal", "stdatamodels", "stpipe", "crds", "mirage", "numpy", "astropy",
                "photutils", "gwcs", "drizzle", "tweakwcs", "scipy", "mpi4py", "mpich", "h5py")
_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path() -> Path:
    """The lock file: in the source tree, or where the image put it (DREAM_HPC_LOCK)."""
    import os

    env = os.environ.get("DREAM_HPC_LOCK")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "requirements.lock").is_file():
            return parent / "requirements.lock"
    return Path("requirements.lock")


def read_lock(path: str | Path | None = None) -> dict[str, str]:
    path = Path(path) if path else lock_path()
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = _LINE.match(line.strip())
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    return {normalize(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def mismatches(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per locked package that is missing or at another version."""
    problems = []
    for name, want in sorted(lock.items()):
        got = have.get(name)
        if got is None:
            problems.append(f"{name}: locked {want}, not installed")
        elif got != want:
            problems.append(f"{name}: locked {want}, installed {got}")
    return problems
