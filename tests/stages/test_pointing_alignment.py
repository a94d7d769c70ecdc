"""Pointing errors, the local reference catalog and honest alignment status (issue 12, "must hold").

Fast tests: the seeded pointing error (shared by every detector of an exposure, by every dither's visit
part; the sky rotation and its inverse), and tweakreg's per-group outcome read from its log.
Chain tests (real Mirage + jwst, tiny): every visit off by exactly 70 mas; after alignment the WCS of
every exposure is within 10 mas (SW) of the truth; with tweakreg skipped the science check fails and
`--strict` exits non-zero, the last line saying so.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from _chain_fixtures import SurveyRun, cli, demo_like, write_config

from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.stages import alignment_status, pointing_error


def _unit(detector: str = "NRCB1", exposure: int = 1, visit: int = 1) -> WorkUnit:
    return WorkUnit("09999", 1, visit, 1, 1, 1, exposure, detector, "F150W", "CLEAR", "SUB400P", "MEDIUM8", 4, 1,
                    150.1163, 2.2010, 30.0, "2024-01-01", "00:00:00.000")


def test_errors_are_seeded_per_visit_and_exposure_not_per_detector() -> None:
    cfg = SurveyConfig()
    sw, lw = pointing_error.draw(cfg, _unit("NRCB1")), pointing_error.draw(cfg, _unit("NRCB5"))
    assert sw == lw  # one telescope pointing for both channels
    other_dither = pointing_error.draw(cfg, _unit(exposure=2))
    assert (other_dither.visit_de_mas, other_dither.visit_dn_mas) == (sw.visit_de_mas, sw.visit_dn_mas)
    assert other_dither.de_mas != sw.de_mas  # a few mas between dithers
    assert abs(other_dither.de_mas - sw.de_mas) < 6 * cfg.simulation.pointing_error.dither_sigma_mas
    assert pointing_error.draw(cfg, _unit(visit=2)).visit_de_mas != sw.visit_de_mas
    assert pointing_error.draw(cfg, _unit()) == sw  # reproducible
    cfg.simulation.pointing_error.fixed_visit_mas = 70.0
    fixed = pointing_error.draw(cfg, _unit())
    assert math.hypot(fixed.visit_de_mas, fixed.visit_dn_mas) == pytest.approx(70.0)
    cfg.simulation.pointing_error.enabled = False
    assert pointing_error.draw(cfg, _unit()).total_mas == 0.0


def test_rendering_is_the_inverse_of_the_true_attitude() -> None:
    unit = _unit()
    err = pointing_error.PointingError(60.0, -40.0, 2.0, 60.0, -40.0)
    rng = np.random.default_rng(1)
    ra = unit.ra + rng.uniform(-0.01, 0.01, 50)
    dec = unit.dec + rng.uniform(-0.01, 0.01, 50)
    r, d = pointing_error.to_rendered(err, unit, ra, dec)
    r2, d2 = pointing_error.apply(err, unit, r, d)
    assert np.max(np.abs(r2 - ra)) * 3.6e6 < 1e-3 and np.max(np.abs(d2 - dec)) * 3.6e6 < 1e-3  # < 1 uas
    # at the reference point the truth is the nominal position moved by the error, East and North
    rt, dt = pointing_error.apply(err, unit, [unit.ra], [unit.dec])
    assert (rt[0] - unit.ra) * math.cos(math.radians(unit.dec)) * 3.6e6 == pytest.approx(60.0, abs=1e-3)
    assert (dt[0] - unit.dec) * 3.6e6 == pytest.approx(-40.0, abs=1e-3)


def _records(*messages: tuple[int, str]) -> list[logging.LogRecord]:
    return [logging.LogRecord("tweakwcs", level, "", 0, msg, None, None) for level, msg in messages]


def test_alignment_status_names_the_groups_left_unaligned() -> None:
    info, warn = logging.INFO, logging.WARNING
    recs = _records(
        (info, "Selected image 'GROUP ID: g1' as reference image"),
        (info, "Aligning image catalog 'GROUP ID: g2' to the reference catalog."),
        (info, "Found 9 matches for 'GROUP ID: g2'..."),
        (info, "FIT RMSE: 0.0033   FIT MAE: 0.003"),
        (info, "Final solution based on 9 objects."),
        (info, "Aligning image catalog 'GROUP ID: g3' to the reference catalog."),
        (warn, "Not enough matches (2) found for image catalog 'GROUP ID: g3'. Min required: 5."),
        (warn, "Failed to align catalog GROUP ID: g3 to the reference catalog. Therefore, it will not be added"),
        (info, "Aligning to absolute reference catalog: refcat.ecsv"),
        (info, "Found 15 matches for 'GROUP ID: 987654'..."),
        (info, "FIT RMSE: 0.002   FIT MAE: 0.0018"),
        (info, "Final solution based on 15 objects."),
    )
    out = alignment_status.parse(recs, ["g1", "g2", "g3"], True, 0.015)
    assert out["status"] == "partial" and out["unaligned_groups"] == ["g3"]
    g = {x["group"]: x for x in out["groups"]}
    assert g["g2"]["matches"] == 9 and g["g2"]["rmse_arcsec"] == pytest.approx(0.0033)
    assert "not enough matches (2 < 5)" in g["g3"]["reason"]
    assert out["absolute"]["status"] == "fitted" and out["absolute"]["matches"] == 15
    assert "partial: 2/3 groups aligned (left: g3)" in alignment_status.one_line(out)
    # nothing logged (tweakreg skipped): nothing aligned
    assert alignment_status.parse([], ["g1", "g2"], True, 0.015)["status"] == "not fitted"
    # absolute fit failed: no group is tied to the sky
    recs_abs = recs[:5] + _records((info, "Aligning to absolute reference catalog: r"),
                                   (warn, "Not enough matches (3) found for image catalog 'GROUP ID: 987654'. "
                                          "Min required: 5."))
    assert alignment_status.parse(recs_abs, ["g1", "g2"], True, 0.015)["status"] == "not fitted"


# --- the real chain ----------------------------------------------------------------------------
def _tiny(kit, d, **extra) -> dict:
    cfg = demo_like(kit, d / "catalog.ecsv",
                    pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                    instrument={"detectors": ["NRCB1", "NRCB5"],
                                "readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}},
                    simulation={"pointing_error": {"fixed_visit_mas": 70.0}})
    for section, values in extra.items():
        for key, value in values.items():
            cfg[section][key] = value
    return cfg


def _survey(d, cfg, strict: bool = False) -> SurveyRun:
    import time

    config = write_config(d, cfg)
    t0 = time.monotonic()
    proc = cli(["survey", str(config), "--out", str(d / "run"), *(["--strict"] if strict else [])])
    return SurveyRun(config=config, run=d / "run", proc=proc, wall_s=time.monotonic() - t0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_alignment_removes_a_70_mas_pointing_error(tmp_path, kit) -> None:
    r = _survey(tmp_path, _tiny(kit, tmp_path))
    assert r.proc.returncode in (0, 1), r.proc.stdout[-3000:] + r.proc.stderr[-3000:]
    s = json.loads((r.run / "summary.json").read_text())
    for filt, tol in (("F150W", 10.0), ("F277W", 20.0)):
        m = s["mosaics"][filt]
        assert m["tweakreg"]["alignment"]["status"] == "fitted", m["tweakreg"]
        t = m["science"]["alignment_truth"]
        for e in t["exposures"]:
            assert e["injected_mas"] == pytest.approx(70.0, abs=8.0)  # 70 mas per visit + a few per dither
            assert e["before"]["rms_mas"] == pytest.approx(e["injected_mas"], abs=2.0)
            assert e["after"]["rms_mas"] < tol, (filt, e)
        assert t["passed"] and m["science"]["passed"]["alignment"]
        sky = m["science"]["sky"]  # skymatch (skystat median, as shipped) leaves the dithers on one level
        assert sky["n_pairs"] == 1 and sky["max_abs_pair_difference_sigma"] <= 5.0, sky
        assert m["science"]["passed"]["sky_matching"]
        print(f"{filt}: before {t['before']['rms_mas']:.1f} mas rms, after {t['after']['rms_mas']:.1f} mas rms")
    # truth products: per exposure the pointing and the sources as simulated
    truth = sorted(p.name for p in (r.run / "truth").iterdir())
    assert len([n for n in truth if n.endswith("_pointing.json")]) == 4
    assert len([n for n in truth if n.endswith("_sources.ecsv")]) == 4
    # the headers carry the nominal pointing
    from astropy.io import fits

    plan = {u["unit_id"]: u for u in json.loads((r.run / "plan.json").read_text())["units"]}
    for uid, u in plan.items():
        h = fits.getheader(r.run / "exposures" / f"{uid}_uncal.fits", "SCI")
        assert h["RA_REF"] == pytest.approx(u["ra"], abs=1e-9) and h["DEC_REF"] == pytest.approx(u["dec"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_unaligned_pointing_error_fails_the_check_and_strict(tmp_path, kit) -> None:
    cfg = _tiny(kit, tmp_path, instrument={"detectors": ["NRCB1"]})
    cfg["pipeline"]["image3"]["tweakreg"]["skip"] = True
    r = _survey(tmp_path, cfg, strict=True)
    assert r.proc.returncode == 4, r.proc.stdout[-3000:] + r.proc.stderr[-3000:]
    last = r.proc.stdout.strip().splitlines()[-1]
    assert last.startswith("science checks: FAILED") and "alignment" in last, last
    s = json.loads((r.run / "summary.json").read_text())
    m = s["mosaics"]["F150W"]
    assert m["tweakreg"]["alignment"]["status"] == "not fitted"
    t = m["science"]["alignment_truth"]
    assert not t["passed"] and t["after"]["rms_mas"] > 50.0 and not s["science_passed"]
