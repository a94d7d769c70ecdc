"""Fixtures for the cache, offline and config tests: the kit, damage-safe mirrors of it, tiny uncals.

The shared kit is never modified: tests damage a mirror whose files are symlinks to the kit's,
replacing (never writing through) the one file they damage. CRDS reads its environment once per
process, so everything that resolves references runs in a subprocess (`run_python`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Test against another kit, e.g. while the refkit is being developed: DREAM_HPC_TEST_KIT=/path/to/kit
# and DREAM_HPC_TEST_UNITS="NRCB1:F200W:SUB160:RAPID:1:1[,...]" (detector:filter:subarray:readpatt:xstart:ystart).
KIT_ENV, UNITS_ENV = "DREAM_HPC_TEST_KIT", "DREAM_HPC_TEST_UNITS"
SUBARRAY_SIZES = {"FULL": 2048, "SUB400P": 400, "SUB160": 160, "SUB160P": 160, "SUB64P": 64, "SUB320": 320,
                  "SUB640": 640}


@pytest.fixture(scope="session")
def kit(request: pytest.FixtureRequest) -> Path:
    """The reference kit under test (the shared `refkit_dir` unless DREAM_HPC_TEST_KIT names another)."""
    if os.environ.get(KIT_ENV):
        return Path(os.environ[KIT_ENV])
    return request.getfixturevalue("refkit_dir")


def kit_unit_specs() -> list[dict]:
    """Detector/filter/subarray/readout combinations the kit covers: the config defaults `make kit` builds for."""
    if os.environ.get(UNITS_ENV):
        specs = []
        for item in os.environ[UNITS_ENV].split(","):
            det, filt, sub, patt, x, y = item.split(":")
            specs.append(dict(detector=det, filter=filt, subarray=sub, readpatt=patt, xstart=int(x), ystart=int(y)))
        return specs
    from dream_hpc.config import SurveyConfig, is_short_wave

    cfg = SurveyConfig()
    ins = cfg.instrument
    specs = []
    for det in ins.detectors:
        for sw, lw in ins.filter_pairs:
            specs.append(dict(detector=det, filter=sw if is_short_wave(det) else lw, subarray=ins.subarray,
                              readpatt=ins.readout.readpatt))
    return specs


def unit_kwargs(spec: dict, exposure: int = 1, ngroups: int = 4) -> dict:
    """WorkUnit(**unit_kwargs(spec)) for one kit combination."""
    from dream_hpc.config import SurveyConfig

    s = SurveyConfig().survey
    return dict(program=s.program, observation=1, visit=1, visit_group=1, sequence=1, activity=1,
                exposure=exposure, detector=spec["detector"], filter=spec["filter"], pupil="CLEAR",
                subarray=spec["subarray"], readpatt=spec["readpatt"], ngroups=ngroups, nints=1,
                ra=150.1, dec=2.2, pa_v3=0.0, date_obs=s.start_date, time_obs="01:00:00.000")


def mirror(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A tree at `dst` whose files are symlinks to those of `src` (directories are real)."""
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        if rel.parts and rel.parts[0] in skip:
            continue
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if not rel.parts and name in skip:
                continue
            os.symlink(Path(dirpath) / name, dst / rel / name)
    return dst


def replace_file(path: Path, data: bytes) -> None:
    """Put `data` at `path` as a new file: a mirrored symlink is unlinked first, never written through."""
    path.unlink()
    path.write_bytes(data)


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600,
               prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv (own CRDS environment); output captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def run_cli(*args: str, prefix: tuple[str, ...] = (), timeout: float = 600) -> subprocess.CompletedProcess:
    """`dream-hpc ARGS` in a subprocess (optionally behind `prefix`, e.g. `unshare -n`)."""
    return subprocess.run([*prefix, sys.executable, "-m", "dream_hpc", *args], capture_output=True, text=True,
                          timeout=timeout)


def kit_context(kit: Path) -> str:
    """The pinned context of a kit (its server_config's operational context)."""
    from dream_hpc.references.verify import read_server_config

    info = read_server_config(kit / "crds_cache") or {}
    return str(info.get("operational_context") or "jwst_0001.pmap")


TINY_UNCAL = """
import json, sys
import numpy as np
from dream_hpc.core import offline
from dream_hpc.references.lookup import header_for_unit
from dream_hpc.core.workunit import WorkUnit

spec, out = json.loads(sys.argv[1]), sys.argv[2]
unit = WorkUnit(**spec["unit"])
if spec.get("xstart") is None:  # geometry from the SIAF, as Mirage writes it
    with offline.network_forbidden():  # pysiaf polls GitHub on import
        import pysiaf
    siaf = pysiaf.Siaf("NIRCam")
    ap = siaf[f"{unit.detector.upper()}_{unit.subarray}"]
    xstart, ystart = (int(v) for v in ap.dms_corner())
    n = int(ap.XSciSize)
    full = siaf[f"{unit.detector.upper()}_FULL"]
    fast, slow = (1, -2) if round(full.DetSciYAngle) == 180 else (-1, 2)
else:
    xstart, ystart, n, fast, slow = spec["xstart"], spec["ystart"], spec["size"], -1, 2
ng = unit.ngroups
rng = np.random.default_rng(1)
ramp = 12000.0 + 20.0 * np.arange(ng)[:, None, None] + rng.normal(0, 8, (ng, n, n))
from stdatamodels.jwst import datamodels as dm
m = dm.RampModel(data=ramp[None].astype(np.uint16))
for key, value in header_for_unit(unit).items():
    obj = m
    *parents, leaf = key.split(".")
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, leaf, value)
frame = 1.0
e = m.meta.exposure
e.nresets_at_start, e.nresets_between_ints, e.drop_frames1, e.drop_frames3 = 1, 1, 0, 0
e.frame_time = frame
e.group_time = frame * (e.nframes + e.groupgap)
e.integration_time = e.exposure_time = e.group_time * ng
e.effective_exposure_time = e.measurement_time = e.group_time * (ng - 1)
e.duration = e.exposure_time + frame
e.start_time = 60310.0
e.mid_time = e.start_time + e.exposure_time / 2 / 86400
e.end_time = e.start_time + e.exposure_time / 86400
o = m.meta.observation
o.date_beg = f"{unit.date_obs}T{unit.time_obs}"
o.program_number, o.observation_number, o.visit_number = unit.program, "001", "001"
o.visit_group, o.sequence_id, o.activity_id, o.exposure_number = "01", "1", "01", f"{unit.exposure:05d}"
s = m.meta.subarray
s.xstart, s.ystart, s.xsize, s.ysize, s.fastaxis, s.slowaxis = xstart, ystart, n, n, fast, slow
m.meta.filename = out.rsplit("/", 1)[-1]
m.meta.target.ra, m.meta.target.dec = unit.ra, unit.dec
m.save(out)
"""


def make_tiny_uncal(spec: dict, path: Path, ngroups: int = 4) -> Path:
    """A small but complete NRC_IMAGE uncal (flat ramp plus noise) for one kit combination."""
    from dream_hpc.core.workunit import WorkUnit

    kwargs = unit_kwargs(spec, ngroups=ngroups)
    out = path / WorkUnit(**kwargs).filename("uncal")
    payload = json.dumps({"unit": kwargs, "xstart": spec.get("xstart"), "ystart": spec.get("ystart"),
                          "size": SUBARRAY_SIZES.get(spec["subarray"], 64)})
    done = subprocess.run([sys.executable, "-c", TINY_UNCAL, payload, str(out)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"tiny uncal failed: {done.stderr[-2000:]}")
    return out
