"""The survey plan: deterministic ids and seeds, channel/filter assignment, pointings, APT exports, cost, PNG."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dream_hpc.config import LW_FILTERS, SW_FILTERS, load_config, parse_config
from dream_hpc.core.workunit import SEED_PURPOSES, derive_seed
from dream_hpc.plan import footprint, pointings, summary

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
DEMO = ROOT / "tests" / "data" / "small_survey.yaml"  # the SUB400P demo of sessions 1-3 (the numbers below)
COSMOS = ROOT / "config" / "cosmos-web.yaml"
UNIT_ID = re.compile(r"^jw\d{5}\d{3}\d{3}_\d{2}\d\d{2}_\d{5}_nrc[ab][1-5]$")


def config(tmp_path: Path, **sections: dict[str, Any]) -> Any:
    """demo.yaml with `sections` merged over it (one level deep), written beside tmp files."""
    data = yaml.safe_load(DEMO.read_text())
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def test_ids_are_unique_jwst_names_and_seeds_depend_only_on_survey_seed_and_id(tmp_path: Path) -> None:
    cfg = load_config(DEMO)
    units = pointings.make_plan(cfg)
    assert len(units) == 2 * 2 * 3 * 2  # tiles x dithers x detectors
    ids = [u.unit_id for u in units]
    assert len(set(ids)) == len(ids)
    assert all(UNIT_ID.match(i) for i in ids), ids[:3]
    assert units[0].filename("uncal") == f"{ids[0]}_uncal.fits"
    # seeds are a pure function of (survey seed, unit id): order, other units and other settings do not matter
    shuffled = units[:]
    random.Random(3).shuffle(shuffled)
    for u in shuffled:
        assert u.seeds == {p: derive_seed(cfg.survey.seed, u.unit_id, p) for p in SEED_PURPOSES}
    more = pointings.make_plan(config(tmp_path, pointings={"dither": {"points": 4, "step_arcsec": 1.0, "pattern": "line"}}))
    by_id = {u.unit_id: u.seeds for u in more}
    assert all(by_id[u.unit_id] == u.seeds for u in units)  # same ids, same seeds, despite a 4th dither
    other = pointings.make_plan(config(tmp_path, survey={"seed": 7}))
    assert all(o.seeds != u.seeds for o, u in zip(other, units, strict=True))
    assert len({s for u in units for s in u.seeds.values()}) == 3 * len(units)  # no collisions


def test_ids_encode_visit_activity_exposure(tmp_path: Path) -> None:
    cfg = config(tmp_path, instrument={"filter_pairs": [["F150W", "F277W"], ["F115W", "F444W"]]})
    units = pointings.make_plan(cfg)
    for u in units:
        assert (u.visit, u.activity, u.exposure) == (u.pointing_index + 1, u.pair_index + 1, u.dither_index + 1)
        assert u.unit_id.startswith(f"jw09999001{u.visit:03d}_011{u.activity:02d}_{u.exposure:05d}_")


def test_short_wave_filters_go_to_short_wave_detectors() -> None:
    for path in (DEMO, COSMOS):
        cfg = load_config(path)
        units = pointings.make_plan(cfg)
        pairs = {tuple(p) for p in cfg.instrument.filter_pairs}
        for u in units:
            assert (u.filter in SW_FILTERS) == (u.channel == "SHORT"), u.unit_id
            assert u.filter in (SW_FILTERS if u.detector[-1] != "5" else LW_FILTERS)
        # every exposure observes one pair: the SW and LW detectors of an exposure carry its two filters
        by_exposure: dict[tuple, set[str]] = {}
        for u in units:
            by_exposure.setdefault((u.visit, u.activity, u.exposure), set()).add(u.filter)
        assert all(tuple(sorted(f, key=lambda x: x in LW_FILTERS)) in pairs for f in by_exposure.values())


def test_unit_pointing_is_the_aperture_reference_point_under_mirage_attitude() -> None:
    cfg = load_config(DEMO)
    units = pointings.make_plan(cfg)
    exposures = pointings.mosaic_exposures(cfg)
    for e in exposures[:6]:
        for u in (u for u in units if (u.visit, u.activity, u.exposure) == (e.visit, e.activity, e.exposure)):
            # Mirage rebuilds the attitude from the unit's own (ra, dec) at its aperture's reference point:
            # the target must then land where the plan put it (v2, v3).
            att = footprint.unit_attitude(u.ra, u.dec, u.pa_v3, u.aperture)
            ra, dec = footprint.sky_of(att, e.v2, e.v3)
            assert abs((ra - e.target_ra) * np.cos(np.deg2rad(dec))) * 3600 < 1e-3
            assert abs(dec - e.target_dec) * 3600 < 1e-3
    # dithers move the field by the configured step: 1" along a diagonal line (x, x/2)
    a, b = (u for u in units if u.visit == 1 and u.detector == "NRCB1" and u.exposure in (1, 2))
    sep = np.hypot((a.ra - b.ra) * np.cos(np.deg2rad(a.dec)), a.dec - b.dec) * 3600
    assert sep == pytest.approx(np.hypot(1.0, 0.5), abs=0.01)


def test_observation_times_increase_and_detectors_share_them() -> None:
    cfg = load_config(DEMO)
    units = pointings.make_plan(cfg)
    times: dict[tuple, str] = {}
    for u in units:
        times.setdefault((u.visit, u.activity, u.exposure), f"{u.date_obs}T{u.time_obs}")
        assert times[(u.visit, u.activity, u.exposure)] == f"{u.date_obs}T{u.time_obs}"
    stamps = list(times.values())
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    first, second = (np.datetime64(s) for s in stamps[:2])
    ro = cfg.instrument.readout
    assert (second - first) / np.timedelta64(1, "s") > pointings.exposure_duration(ro.readpatt, ro.ngroups, ro.nints, "SUB400P")


def test_frame_time_matches_mirage() -> None:
    assert pointings.frame_time("FULL") == pytest.approx(10.73677, abs=1e-5)
    assert pointings.frame_time("SUB400P") == pytest.approx(1.65624, abs=1e-5)
    assert pointings.frame_time("SUB640") == pytest.approx(4.18584, abs=1e-5)


def test_cost_scales_with_pixels_and_groups(tmp_path: Path) -> None:
    small = pointings.make_plan(load_config(DEMO))
    more_groups = pointings.make_plan(config(tmp_path, instrument={"readout": {"readpatt": "MEDIUM8", "ngroups": 9,
                                                                           "nints": 1}}))
    full = pointings.make_plan(config(tmp_path, instrument={"subarray": "FULL"}))
    for a, b, c in zip(small, more_groups, full, strict=True):
        assert 0 < a.est_cpu_s < b.est_cpu_s < c.est_cpu_s
        assert 0 < a.est_mem_mb < c.est_mem_mb
    s = summary.summarize(load_config(DEMO), small, node_mem_gb=24, node_cores=2)
    assert s["units"] == len(small) and set(s["image3"]) == {"F150W", "F277W"}
    assert s["cpu_hours"]["total"] == pytest.approx(sum(u.est_cpu_s for u in small) / 3600, abs=5e-4)  # 3 decimals
    assert s["node"]["ranks_per_node"] == 2


def test_cosmos_web_plan_is_full_scale() -> None:
    cfg = load_config(COSMOS)
    units = pointings.make_plan(cfg)
    s = summary.summarize(cfg, units, node_mem_gb=256, node_cores=64)
    assert s["visits"] == 152 and s["units"] == 152 * 2 * 4 * 10 and s["filters"] == ["F115W", "F150W", "F277W", "F444W"]
    # a contiguous ~0.54 deg^2 mosaic (the published area) in both channels
    assert s["footprint_arcmin2"]["SHORT"] / 3600 == pytest.approx(0.54, rel=0.1)
    assert s["footprint_arcmin2"]["LONG"] / 3600 == pytest.approx(0.54, rel=0.1)
    assert 100 < s["cpu_hours"]["total"] < 1e5


def test_apt_exports_read_like_mirage(tmp_path: Path) -> None:
    cfg = config(tmp_path, pointings={"mode": "apt", "apt": {"xml": str(DATA / "apt_demo.xml"),
                                                             "pointing": str(DATA / "apt_demo.pointing")}})
    units = pointings.make_plan(cfg)
    assert len(units) == 8 * 2  # 2 tiles x 2 filter configs x 2 dithers, NRCB1 + NRCB5
    assert {u.program for u in units} == {"01234"}  # the proposal id from the .xml
    assert {(u.activity, u.filter) for u in units} == {(1, "F150W"), (1, "F277W"), (2, "F115W"), (2, "F444W")}
    assert {(u.activity, u.readpatt, u.ngroups) for u in units} == {(1, "BRIGHT2", 4), (2, "MEDIUM8", 3)}
    assert {u.visit for u in units} == {1, 2} and {u.exposure for u in units} == {1, 2}
    assert pointings.survey_filters(cfg) == sorted({u.filter for u in units})  # what load_catalog reads

    # Mirage's own readers and RA/Dec math (apt_inputs.ra_dec_update), in a subprocess: importing Mirage
    # reconfigures logging and writes mirage_latest.log into the current directory.
    script = f"""
import json, logging
logging.disable(logging.CRITICAL)
from mirage.apt.read_apt_xml import ReadAPTXML
from mirage.apt.apt_inputs import AptInput
from mirage.yaml.generate_observationlist import expand_for_dithers
from mirage.utils import siaf_interface
from pysiaf.utils import rotations
x = expand_for_dithers(ReadAPTXML().read_xml({str(DATA / 'apt_demo.xml')!r}), verbose=False)
p = AptInput().get_pointing_info({str(DATA / 'apt_demo.pointing')!r}, propid=int(x['ProposalID'][0]))
siaf = siaf_interface.get_instance('NIRCam')
out = []
for i in range(len(p['v2'])):
    for det in ('NRCB1', 'NRCB5'):
        ap = det + '_FULL'
        roll, att, _, _ = siaf_interface.get_siaf_information(siaf, ap, float(p['ra'][i]), float(p['dec'][i]),
                                                             {cfg.pointings.pa_v3}, v2_arcsec=p['v2'][i], v3_arcsec=p['v3'][i])
        ra, dec = rotations.pointing(att, siaf[ap].V2Ref, siaf[ap].V3Ref)
        out.append([int(p['visit_num'][i]), x['ShortFilter'][i], x['LongFilter'][i], det, float(ra), float(dec)])
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mirage = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(mirage) == len(units)
    for u, (visit, sw, lw, det, ra, dec) in zip(units, mirage, strict=True):
        assert (u.visit, u.detector, u.filter) == (visit, det, sw if det == "NRCB1" else lw)
        assert abs(u.ra - ra) * 3600 < 1e-3 and abs(u.dec - dec) * 3600 < 1e-3


def test_apt_exports_that_disagree_give_one_line(tmp_path: Path) -> None:
    lines = (DATA / "apt_demo.pointing").read_text().splitlines()
    cut = tmp_path / "cut.pointing"
    cut.write_text("\n".join(ln for ln in lines if not ln.strip().startswith("1    2   2")) + "\n")
    cfg = config(tmp_path, pointings={"mode": "apt", "apt": {"xml": str(DATA / "apt_demo.xml"), "pointing": str(cut)}})
    with pytest.raises(pointings.PlanError) as err:
        pointings.make_plan(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "8 exposures in apt_demo.xml but 6 in cut.pointing" in msg


def test_plan_command_writes_plan_json_and_a_footprint_png(tmp_path: Path) -> None:
    from dream_hpc.cli import main

    run = tmp_path / "run"
    assert main(["plan", str(DEMO), "--out", str(run)]) == 0
    units = summary.load_plan(run / "plan.json")
    assert [u.unit_id for u in units] == [u.unit_id for u in pointings.make_plan(load_config(DEMO))]
    assert all(u.est_cpu_s > 0 and u.est_mem_mb > 0 for u in units)
    png = run / "figures" / "footprint.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # a different plan never silently replaces the one in RUN
    other = tmp_path / "other.yaml"
    other.write_text(DEMO.read_text().replace("rows: 2", "rows: 1"))
    assert main(["plan", str(other), "--out", str(run)]) == 2
    assert [u.unit_id for u in summary.load_plan(run / "plan.json")] == [u.unit_id for u in units]


def test_bad_pointing_settings_are_one_line_errors(tmp_path: Path) -> None:
    from dream_hpc.config import ConfigError

    text = DEMO.read_text()
    for bad, key in ((("overlap: 0.3", "overlap: 0.95"), "pointings.overlap"),
                     (("step_arcsec: [0.0, 0.0]", "step_arcsec: [-1.0, 0.0]"), "pointings.step_arcsec")):
        with pytest.raises(ConfigError) as err:
            parse_config(text.replace(*bad), tmp_path / "x.yaml")
        assert key in str(err.value) and "\n" not in str(err.value)
