"""The prepared catalogs in the user cache: list them, and keep only the newest few per survey.

`catalog check`, `plan --out` and `catalog prepare` (without --out) write a prepared catalog to the
user cache (`prepared.cache_dir()`, ~/.cache/dream-hpc/catalogs), named `SURVEY-KEY.h5`; each change
of the source files, the catalog settings or the footprint makes a new one (~1 GB for COSMOS-Web).
So after writing one, the cache keeps the newest `catalog.prepared_keep` files of that survey
(default 2; 0 keeps all), and `dream-hpc catalog prepare --list / --clean` shows and removes them.

Only files this package wrote are touched: names of the form SURVEY-<20 hex>.h5, plus staging
files (.tmp-SURVEY-KEY.h5.PID[.staging]) of processes no longer running. A run's own copy
(RUN/catalog/prepared.h5) and files written with --out are never in the cache.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^(?P<survey>.+)-(?P<key>[0-9a-f]{20})\.h5$")
STAGING = re.compile(r"^\.tmp-(?P<name>.+-[0-9a-f]{20}\.h5)\.(?P<pid>\d+)(\.staging)?$")


@dataclass(frozen=True)
class CachedCatalog:
    path: Path
    survey: str
    key: str  # the first 20 hex digits of prepared.prepare_key
    size: int
    mtime: float

    def line(self, current: Path | None = None) -> str:
        age_h = max(time.time() - self.mtime, 0.0) / 3600.0
        age = f"{age_h:.1f} h" if age_h < 48 else f"{age_h / 24:.0f} d"
        mark = "  (this config's)" if current is not None and self.path == current else ""
        return f"{self.size / 1e6:10,.0f} MB  {age:>7} old  {self.survey:<20} {self.path}{mark}"


def cached(directory: Path) -> list[CachedCatalog]:
    """The prepared catalogs in `directory`, newest first."""
    out = []
    if directory.is_dir():
        for p in directory.iterdir():
            m = NAME.match(p.name)
            if m and p.is_file():
                st = p.stat()
                out.append(CachedCatalog(p, m["survey"], m["key"], st.st_size, st.st_mtime))
    return sorted(out, key=lambda c: (-c.mtime, c.path.name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_staging(directory: Path) -> list[Path]:
    """Staging files left by a prepare that was killed (its process is gone)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if (m := STAGING.match(p.name)) and not _alive(int(m["pid"])))


def prune(directory: Path, keep: int, survey: str | None = None, protect: tuple[Path, ...] = ()) -> list[Path]:
    """Remove all but the newest `keep` prepared catalogs per survey (only `survey`'s when given; never
    those in `protect`), and stale staging files; returns what was removed. keep < 0: remove none."""
    removed: list[Path] = []
    if keep >= 0:
        by_survey: dict[str, list[CachedCatalog]] = {}
        for c in cached(directory):
            if survey is None or c.survey == survey:
                by_survey.setdefault(c.survey, []).append(c)
        protected = {p.resolve() for p in protect}
        for files in by_survey.values():
            kept = sum(1 for c in files if c.path.resolve() in protected)
            for c in files:  # newest first
                if c.path.resolve() in protected:
                    continue
                if kept < keep:
                    kept += 1
                    continue
                c.path.unlink(missing_ok=True)
                removed.append(c.path)
    for p in stale_staging(directory):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
