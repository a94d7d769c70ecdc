"""`dream-hpc plan --measured RUN`: ranks per node and node-hours from a run's journalled peak memory and CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dream_hpc.config import load_config
from dream_hpc.core.errors import UserError
from dream_hpc.core.journal import JournalWriter
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import cost
from dream_hpc.plan.measured import PEAK_MARGIN, measured_advice
from dream_hpc.plan.pointings import make_plan
from dream_hpc.plan.summary import summarize

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "data" / "small_survey.yaml"  # the SUB400P demo of sessions 1-3 (the numbers below)
STAGES = ("simulate", "detector1", "image2")


@pytest.fixture(scope="module")
def demo_units() -> list[WorkUnit]:
    return make_plan(load_config(DEMO))  # 12 SW + 12 LW units, SUB400P MEDIUM8 4 groups x 1 int


def fake_run(root: Path, measured: list[tuple[WorkUnit, float, float]], unfinished: list[WorkUnit] = ()) -> Path:
    """A run whose plan.json holds the units and whose journal says each (unit, peak MB, CPU s) finished."""
    run = RunDir.create(root)
    units = [u for u, _, _ in measured] + list(unfinished)
    run.plan.write_text(json.dumps({"units": [u.to_dict() for u in units]}))
    j = JournalWriter(run.journal, 0)
    for u, peak, cpu in measured:
        for i, stage in enumerate(STAGES):  # the peak in simulate (as Mirage's dark makes it), less later
            j.write("stage_done", u.unit_id, stage=stage, inputs={}, outputs={}, wall_s=cpu / 3,
                    cpu_s=cpu / 3, peak_rss_mb=peak / (1 + i))
        j.write("unit_done", u.unit_id, outputs={}, wall_s=cpu, peak_rss_mb=peak)
    for u in unfinished:  # killed in detector1: its simulate peak must not count
        j.write("stage_done", u.unit_id, stage="simulate", inputs={}, outputs={}, wall_s=1.0, cpu_s=1.0,
                peak_rss_mb=99_000.0)
    j.close()
    return root


def test_measured_peak_sets_the_ranks(tmp_path, demo_units):
    sw = [u for u in demo_units if u.channel == "SHORT"]
    lw = [u for u in demo_units if u.channel == "LONG"]
    run = fake_run(tmp_path / "pilot", [(sw[0], 2048.0, 10.0), (sw[1], 3072.0, 30.0), (sw[2], 2500.0, 20.0),
                                        (lw[0], 1500.0, 8.0)], unfinished=[lw[1]])
    m = measured_advice(demo_units, run, node_mem_gb=24.0, node_cores=8)
    assert (m["units_measured"], m["units_left_out"]) == (4, 1)
    rows = {r["kind"]: r for r in m["kinds"]}
    assert set(rows) == {"SW SUB400P MEDIUM8 4g x 1i", "LW SUB400P MEDIUM8 4g x 1i"}
    assert all(r["source"] == "measured" for r in rows.values())
    sw_row = rows["SW SUB400P MEDIUM8 4g x 1i"]
    assert (sw_row["units"], sw_row["measured_units"]) == (12, 3)
    assert sw_row["peak_mb"] == round(3072 * (1 + PEAK_MARGIN))  # the largest, not the mean, plus margin
    assert sw_row["cpu_s"] == 20.0  # median
    # 3 GB (+10%) on 24 GB x 0.85 usable: 6 ranks, though the node has 8 cores and the model allows 8
    expected = math.floor(24 * 1024 * 0.85 / (3072 * (1 + PEAK_MARGIN)))
    assert m["ranks_per_node"] == expected == 6
    assert cost.ranks_per_node(max(u.est_mem_mb for u in demo_units), 24.0, 8) == 8
    cpu_hours = (12 * 20.0 + 12 * 8.0) / 3600.0
    assert m["cpu_hours"] == round(cpu_hours, 3) and m["node_hours"] == round(cpu_hours / 6, 2)


def test_kinds_the_run_did_not_cover_are_scaled_from_the_model(tmp_path, demo_units):
    sw = [u for u in demo_units if u.channel == "SHORT"][:2]
    # the pilot measured SW units only, at 1.5x the model's memory and 2x its CPU
    run = fake_run(tmp_path / "pilot", [(u, 1.5 * u.est_mem_mb, 2.0 * u.est_cpu_s) for u in sw])
    m = measured_advice(demo_units, run, node_mem_gb=24.0, node_cores=2)
    assert m["ratio_to_model"]["mem"] == pytest.approx(1.5, rel=1e-3)
    lw_row = next(r for r in m["kinds"] if r["kind"].startswith("LW"))
    assert (lw_row["source"], lw_row["measured_units"]) == ("scaled", 0)
    lw_model = max(u.est_mem_mb for u in demo_units if u.channel == "LONG")
    assert lw_row["peak_mb"] == pytest.approx(lw_model * 1.5 * (1 + PEAK_MARGIN), abs=1)
    assert lw_row["cpu_s"] == pytest.approx(lw_row["model_cpu_s"] * 2.0, abs=0.2)
    assert next(r for r in m["kinds"] if r["kind"].startswith("SW"))["source"] == "measured"


def test_a_run_with_nothing_measured_says_how_to_get_measurements(tmp_path, demo_units):
    empty = RunDir.create(tmp_path / "empty").root
    with pytest.raises(UserError, match=r"empty: no unit has finished a stage there; run some units first: "
                                        r"dream-hpc run CONFIG --out .*empty"):
        measured_advice(demo_units, empty, 24.0, 2)
    with pytest.raises(UserError, match=r"not a dream-hpc run directory"):
        measured_advice(demo_units, tmp_path / "nowhere", 24.0, 2)
    # a journal from before peak memory was recorded: measured nothing usable
    old = fake_run(tmp_path / "old", [(demo_units[0], 0.0, 0.0)])
    with pytest.raises(UserError, match=r"records no peak memory"):
        measured_advice(demo_units, old, 24.0, 2)


def test_plan_command_prints_measured_beside_model_and_writes_it(tmp_path, demo_units):
    sw = [u for u in demo_units if u.channel == "SHORT"][:2]
    run = fake_run(tmp_path / "pilot", [(sw[0], 3072.0, 12.0), (sw[1], 2900.0, 10.0)])
    out = subprocess.run([sys.executable, "-m", "dream_hpc", "plan", str(DEMO), "--measured", str(run),
                          "--node-mem-gb", "24", "--node-cores", "8", "--out", str(tmp_path / "new")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "advice: 8 ranks per node" in out.stdout  # the model's advice is still there
    assert "advice (measured): 3.30 GiB per unit -> 6 ranks per node" in out.stdout
    assert "SW SUB400P MEDIUM8 4g x 1i: 12 units, measured on 2" in out.stdout
    assert "LW SUB400P MEDIUM8 4g x 1i: 12 units, scaled" in out.stdout
    written = json.loads((tmp_path / "new" / "plan.json").read_text())["summary"]
    assert written["measured"]["ranks_per_node"] == 6
    bad = subprocess.run([sys.executable, "-m", "dream_hpc", "plan", str(DEMO), "--measured",
                          str(RunDir.create(tmp_path / "empty").root)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "run some units" in bad.stderr


def test_summary_without_measured_run_is_unchanged(demo_units):
    assert "measured" not in summarize(load_config(DEMO), demo_units)
