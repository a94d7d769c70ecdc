"""References kept hot (stages/hot_references.py): the cache's cap and eviction, and products unchanged.

Fast: least recently used models go first to stay under the cap; a model larger than the cap is served
but not kept; a cap of 0 turns the cache off.
Chain (real Mirage, Detector1, Image2; SUB400P, NRCB1, 2 dithers = 2 units of one kind): the units run
cold (`engine.reference_cache_gb: 0`, `run --no-mosaic`), then the same `_uncal` files are calibrated
again by the real stage functions in one process with the cache on, so the second unit takes every
hot reference type from memory. Every FITS array must be bit-identical to the cold products, every header
card and datamodel value equal (meta.ref_file names the same crds:// files) but the write time and the step
logs; the cache must have served hits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _chain_fixtures import ROOT, cli, demo_like, write_config

from dream_hpc.stages.hot_references import ReferenceCache, cache_for


class _Model:
    def __init__(self, path: str, n: int):
        self.path, self.n, self.closed = path, n, False

    def close(self) -> None:
        self.closed = True


def test_cache_evicts_least_recently_used_within_cap() -> None:
    sizes = {"dark_a": 60, "flat_a": 30, "dark_b": 50, "huge": 500}
    loads: list[str] = []

    def load(path: str) -> _Model:
        loads.append(path)
        return _Model(path, sizes[path])

    cache = ReferenceCache(100, size=lambda m: m.n)
    a, kept = cache.get("dark_a", load)
    assert kept and cache.nbytes == 60
    cache.get("flat_a", load)
    assert cache.get("dark_a", load)[0] is a  # a hit: not loaded again, now most recently used
    assert loads == ["dark_a", "flat_a"] and cache.hits == 1 and cache.misses == 2
    cache.get("dark_b", load)  # 60 + 30 + 50 > 100: flat_a (least recently used) goes, dark_a too
    assert cache.keys() == ["dark_b"] and cache.nbytes == 50 and cache.evictions == 2 and a.closed
    big, kept = cache.get("huge", load)  # larger than the cap alone: served, not kept, nothing evicted
    assert not kept and not big.closed and cache.keys() == ["dark_b"]
    assert cache.nbytes <= cache.cap_bytes


def test_cap_zero_turns_the_cache_off() -> None:
    assert cache_for(0.0) is None
    cache = cache_for(0.5)
    assert cache is not None and cache.cap_bytes == 2**29


_HOT_SCRIPT = r"""
import dataclasses, json, os, sys
from pathlib import Path
from dream_hpc.config import load_config
from dream_hpc.core import offline
from dream_hpc.core.rundir import RunDir
from dream_hpc.plan.pointings import make_plan
from dream_hpc.stages.contract import StageContext
from dream_hpc.stages import calibrate, hot_references

config, cold, hot = sys.argv[1:4]
cfg = load_config(config)
cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, reference_cache_gb=2.0))
refs = cfg.references
offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))
run = RunDir.create(hot)
units = make_plan(cfg)
for u in units:
    os.link(Path(cold) / "exposures" / u.filename("uncal"), run.exposures / u.filename("uncal"))
ctx = StageContext(cfg=cfg, run=run)
for u in units:
    calibrate.detector1_unit(u, ctx)
    calibrate.image2_unit(u, ctx)
c = hot_references._CACHE
print(json.dumps({"hits": c.hits, "misses": c.misses, "held": c.keys(), "nbytes": c.nbytes,
                  "units": [u.unit_id for u in units],
                  "files": [u.filename(s) for u in units for s in ("rate", "cal")]}))
"""


# Per-run facts of a jwst product: when it was written (and the hash of the file it was read from,
# which holds that time), the step logs (timestamps; the log line "Using DARK reference file ..."
# shows the in-memory model instead of the path), and the ASDF extensions the writing process had
# loaded, in the order it loaded them (a survey worker with Mirage vs this plain process).
_PER_RUN = ("meta.date", "cal_logs.", "_fits_hash", "history.extensions.")


def _same_product(a, b) -> list[str]:
    """Differences between two products: any byte of a FITS data array, any header card but DATE, any
    datamodel value (the ASDF tree: meta.ref_file, cal_step, ...) but the per-run ones."""
    from astropy.io import fits
    from stdatamodels.jwst import datamodels

    problems = []
    with fits.open(a) as ha, fits.open(b) as hb:
        if [h.name for h in ha] != [h.name for h in hb]:
            return [f"HDUs {[h.name for h in ha]} vs {[h.name for h in hb]}"]
        for x, y in zip(ha, hb, strict=True):
            if x.name == "ASDF":  # the serialised datamodel tree: compared value by value below
                continue
            if (x.data is None) != (y.data is None) or (
                    x.data is not None and np.asarray(x.data).tobytes() != np.asarray(y.data).tobytes()):
                problems.append(f"{x.name} data")
            hx = {k: v for k, v in x.header.items() if k not in ("DATE", "CHECKSUM", "DATASUM")}
            hy = {k: v for k, v in y.header.items() if k not in ("DATE", "CHECKSUM", "DATASUM")}
            diff = sorted(k for k in set(hx) | set(hy) if hx.get(k) != hy.get(k))
            if diff:
                problems.append(f"{x.name} header {diff[:6]}")
    with datamodels.open(a) as ma, datamodels.open(b) as mb:
        fa, fb = ma.to_flat_dict(), mb.to_flat_dict()
    for key in sorted(set(fa) | set(fb)):
        if key.startswith(_PER_RUN):
            continue
        va, vb = fa.get(key), fb.get(key)
        if isinstance(va, np.ndarray) and isinstance(vb, np.ndarray):
            same = np.array_equal(va, vb, equal_nan=True)
        elif hasattr(va, "forward_transform"):  # a gwcs has no value equality: the same sky for every pixel
            y, x = np.mgrid[0:2048:64, 0:2048:64]
            same = all(np.array_equal(p, q, equal_nan=True) for p, q in zip(va(x, y), vb(x, y), strict=True))
        else:
            same = va == vb
        if not same:
            problems.append(f"{key}: {str(va)[:60]} vs {str(vb)[:60]}")
    return problems


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_hot_references_give_bit_identical_products(tmp_path, kit) -> None:
    d = tmp_path / "hot"
    cfg = demo_like(kit, d / "catalog.ecsv",
                    pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                    instrument={"detectors": ["NRCB1"], "readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}},
                    engine={"reference_cache_gb": 0.0})
    config = write_config(d, cfg)
    cold = d / "cold"
    proc = cli(["run", str(config), "--out", str(cold), "--no-mosaic"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    hot = d / "hot"
    out = subprocess.run([sys.executable, "-c", _HOT_SCRIPT, str(config), str(cold), str(hot)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(stats["units"]) == 2
    # unit 2 took the dark, superbias, linearity, saturation, readnoise, gain, mask (Detector1) and
    # the flat (clean_flicker_noise, Image2) from memory
    assert stats["hits"] >= 8, stats
    assert any("dark" in p for p in stats["held"]), stats
    for name in stats["files"]:
        problems = _same_product(cold / "exposures" / name, hot / "exposures" / name)
        assert not problems, (name, [p.split(":")[0] for p in problems], problems[:3])
