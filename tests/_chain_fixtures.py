"""Fixtures for the science-chain tests: small survey configs on the shared kit, run once per session.

Surveys run in a subprocess (`python -m dream_hpc survey`): CRDS reads its environment once per
process, and other tests in this session point it elsewhere.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# the chain tests' base: the small SUB400P survey (config/demo.yaml is the FULL-frame demo now)
DEMO = ROOT / "tests" / "data" / "small_survey.yaml"


def demo_like(kit: Path, catalog: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """tests/data/small_survey.yaml (the SUB400P demo of sessions 1-3) pointed at `kit` and `catalog`, with `sections` merged over it (one level deep).

    A .fits `catalog` is DREaM's layout, as the demo's: it and `<stem>_photometry.fits` beside it; any
    other suffix is one table holding the magnitudes too."""
    cfg = yaml.safe_load(DEMO.read_text())
    cfg["references"].update(crds_path=str(kit / "crds_cache"), mirage_data=str(kit / "mirage_data"))
    cfg["catalog"]["path"] = str(catalog)
    cfg["catalog"]["photometry"] = (str(catalog.with_name(f"{catalog.stem}_photometry.fits"))
                                    if catalog.suffix == ".fits" else "")
    for name, values in sections.items():
        merged = copy.deepcopy(cfg.get(name, {}))
        merged.update(values)
        cfg[name] = merged
    return cfg


def write_config(directory: Path, cfg: dict[str, Any], synth: bool = True) -> Path:
    """Write `cfg` as directory/survey.yaml and (by default) its mock catalog."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "survey.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if synth:
        cli(["catalog", "synth", str(path), "--out", cfg["catalog"]["path"], "--overwrite"], check=True)
    return path


def cli(args: list[str], check: bool = False, timeout: float = 1800,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dream_hpc", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"dream-hpc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class SurveyRun:
    config: Path
    run: Path
    proc: subprocess.CompletedProcess
    wall_s: float


def run_survey(directory: Path, cfg: dict[str, Any]) -> SurveyRun:
    config = write_config(directory, cfg)
    run = directory / "run"
    t0 = time.monotonic()
    proc = cli(["survey", str(config), "--out", str(run)])
    return SurveyRun(config=config, run=run, proc=proc, wall_s=time.monotonic() - t0)


@pytest.fixture(scope="session")
def chain_run(tmp_path_factory: pytest.TempPathFactory, kit: Path) -> SurveyRun:
    """A tiny survey: one tile, two dithers, NRCB1 only (2 units in F150W), a short readout."""
    d = tmp_path_factory.mktemp("chain")
    cfg = demo_like(kit, d / "dream_main.fits",
                    pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                    instrument={"detectors": ["NRCB1"], "readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}})
    return run_survey(d, cfg)


@pytest.fixture(scope="session")
def science_run(tmp_path_factory: pytest.TempPathFactory, kit: Path) -> SurveyRun:
    """The demo's exposures and readout on one tile: 3 dithers x (NRCB1 F150W + NRCB5 F277W) = 6 units."""
    d = tmp_path_factory.mktemp("science")
    cfg = demo_like(kit, d / "dream_main.fits", pointings={"rows": 1, "cols": 1})
    return run_survey(d, cfg)
