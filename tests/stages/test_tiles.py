"""Survey-scale Image3 as tiles on one pixel grid (plan/grid.py, engine/mosaic_graph.py, stages/tiles.py).

Planning tests are quick (no jwst). The real-chain tests share one small survey: the demo's 2 x 2
pointings x 3 dithers on NRCB1 only (12 F150W units) with `mosaic.tiles: [2, 2]`, run once by
`dream-hpc survey` on one rank (~4-6 min on 2 shared cores); then `dream-hpc mosaic` on copies of it
under `mpiexec -n 2` (~3 min), and with a rank SIGKILLed mid-tile plus a plain rerun (~4 min).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _chain_fixtures import DEMO, ROOT, SurveyRun, demo_like, run_survey
from _engine_fixtures import MPIEXEC, engine_env, wait_for

from dream_hpc.config import load_config, parse_config
from dream_hpc.core.journal import journal_files, read_file
from dream_hpc.engine.executor import Outcome
from dream_hpc.engine.mosaic_graph import TiledMosaics
from dream_hpc.engine.tasks import Task
from dream_hpc.plan import grid as G
from dream_hpc.plan.pointings import make_plan

FILTER = "F150W"
PRODUCT = "jw09999-o001_t001_nircam_clear-f150w"


def demo_with(**sections: dict) -> object:
    import yaml

    data = yaml.safe_load(DEMO.read_text())
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return parse_config(yaml.safe_dump(data), DEMO)


# --- planning (no jwst) ------------------------------------------------------------------------
def test_demo_grid_gets_one_tile_and_2x2_tiles_differ_only_in_crpix_and_shape() -> None:
    cfg = load_config(DEMO)
    units = make_plan(cfg)
    assert all(len(g.tiles) == 1 for g in G.filter_tiles(cfg, units).values())  # small enough: one tile
    cfg2 = demo_with(mosaic={"mode": "tiles", "tiles": [2, 2]})
    grids = G.filter_tiles(cfg2, units)
    for filt, g in grids.items():
        assert len(g.tiles) == 4
        pars = [g.resample_pars(t) for t in g.tiles]
        assert len({(tuple(p["crval"]), p["rotation"], p["pixel_scale"]) for p in pars}) == 1
        assert len({tuple(p["crpix"]) for p in pars}) == 4
        for t in g.tiles:  # one grid: tile pixel + origin = grid pixel
            assert t.crpix == (g.crpix[0] - t.x0, g.crpix[1] - t.y0)
        cover = np.zeros(g.shape[::-1], int)
        for t in g.tiles:
            cover[t.cy0:t.cy1, t.cx0:t.cx1] += 1
        assert (cover == 1).all(), f"{filt}: tile cores must partition the grid"
        assert all(t.x1 - t.cx1 == g.overlap_px or t.x1 == g.shape[0] for t in g.tiles)
        planned = {u.unit_id for u in units if u.filter == filt}
        assert set().union(*(t.units for t in g.tiles)) == planned
    assert grids["F150W"].pixel_scale == 0.03 and grids["F277W"].pixel_scale == 0.06
    assert grids["F150W"].crval == grids["F277W"].crval == (cfg.pointings.center_ra, cfg.pointings.center_dec)


def test_cosmos_web_tiles_fit_a_node_and_know_their_inputs() -> None:
    cfg = load_config(ROOT / "config" / "cosmos-web.yaml")
    units = make_plan(cfg)
    s = G.tiles_summary(cfg, units)
    budget = cfg.mosaic.node_mem_gb * 1024 * (1 - G.NODE_RESERVE)
    for filt, t in s.items():
        assert t["tiles"] >= 20, (filt, t)  # COSMOS-Web itself needed 20
        assert t["tile_mem_mb_max"] <= budget, (filt, t)
        assert 0 < t["inputs_per_tile"]["max"] < 200


def test_failed_units_block_only_the_tiles_they_touch() -> None:
    cfg = demo_with(mosaic={"mode": "tiles", "tiles": [4, 4]})
    units = make_plan(cfg)
    mine = [u for u in units if u.filter == FILTER]
    tasks = [Task(u.unit_id, "unit", 1.0, 10.0, unit=u) for u in mine]
    bad = mine[0].unit_id
    outcomes = {t.key: Outcome(t.key, "unit", "failed" if t.key == bad else "done") for t in tasks}
    graph, blocked = TiledMosaics(cfg, None, units).graph(FILTER, tasks, outcomes)
    g = G.filter_tiles(cfg, units)[FILTER]
    touching = {t.tile_id for t in g.tiles if bad in t.units}
    assert touching and len(touching) < len(g.tiles)
    assert {k.rsplit("/", 1)[-1] for k in blocked} == touching
    assert all(bad in why for why in blocked.values())
    run_tiles = {t.spec["tile"] for t in graph if t.spec["phase"] == "tile"}
    assert run_tiles == {t.tile_id for t in g.tiles if t.units} - touching
    merge = [t for t in graph if t.spec["phase"] == "merge"]
    assert len(merge) == 1 and set(merge[0].after) == {t.key for t in graph if t.spec["phase"] == "tile"}


# --- the real chain ---------------------------------------------------------------------------
@dataclass
class Tiled:
    survey: SurveyRun
    plan_tile_mem_mb: float


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory, kit: Path) -> Tiled:
    d = tmp_path_factory.mktemp("tiled")
    cfg = demo_like(kit, d / "catalog.ecsv", instrument={"detectors": ["NRCB1"]}, mosaic={"mode": "tiles", "tiles": [2, 2]},
                    engine={"progress_interval_s": 10.0})
    survey = run_survey(d, cfg)
    assert survey.proc.returncode == 0, survey.proc.stderr[-4000:]
    conf = load_config(survey.config)
    units = make_plan(conf)
    pixels = {u.unit_id: G.cost.unit_pixels(u) for u in units}
    est = max(G.tile_cost(t, pixels).mem_mb for t in G.filter_tiles(conf, units)[FILTER].tiles)
    return Tiled(survey, est)


def records(run: Path) -> list[dict]:
    out = []
    for f in journal_files(run / "journal"):
        out.extend(read_file(f).records)
    return sorted(out, key=lambda r: r["time"])


def mosaic_done(run: Path) -> dict[str, dict]:
    return {r["data"]["filter"]: r["data"] for r in records(run) if r["kind"] == "mosaic_done"}


def check(tiled: Tiled, tmp_path: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_tiles_check.py"), str(tiled.survey.config),
                           str(tiled.survey.run), str(tmp_path / "single"), FILTER], capture_output=True, text=True,
                          timeout=900, env=engine_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_tiled_survey_products_science_and_memory(tiled: Tiled, tmp_path: Path) -> None:
    run = tiled.survey.run
    summary = json.loads((run / "summary.json").read_text())
    sc = summary["mosaics"][FILTER]["science"]
    # the same thresholds as the single mosaic (stages/science.py); alignment from the per-visit tasks
    assert set(sc["passed"]) >= {"completeness", "astrometry", "photometry", "alignment", "sky_matching"}, sc
    # sky matching included: its pairs hold every column parity (stages/sky_check.sample_pixels), so the
    # 1/f kit's per-exposure odd/even column offsets no longer read as 6-sigma steps between dithers
    assert all(sc["passed"].values()), sc
    sky = sc["sky"]
    assert sky["n_pairs"] >= 11 and sky["max_abs_pair_difference_sigma"] <= 5.0, sky["worst_pair"]
    assert summary["mosaics"][FILTER]["tweakreg"]["alignment"]["status"] == "fitted"
    tiles = sorted((run / "mosaic" / "tiles").glob(f"{PRODUCT}-r*c*_i2d.fits"))
    assert len(tiles) >= 4
    assert len(list((run / "mosaic" / "tiles").glob(f"{PRODUCT}-r*c*_segm.fits"))) == len(tiles)
    index = json.loads((run / "mosaic" / f"{PRODUCT}_tiles.json").read_text())
    assert len(index["tiles"]) == len(tiles) and not index["missing_tiles"]
    assert all(t["made"] and t["inputs"] and len(t["core_sky_corners"]) == 4 for t in index["tiles"])
    assert (run / "figures" / f"mosaic_{FILTER.lower()}.png").stat().st_size > 10_000
    done = mosaic_done(run)
    frozen = {uid: f for k, d in done.items() if "/astrometry/" in k for uid, f in d["extra"]["frozen_wcs"].items()}
    assert len(frozen) == 12 and all(f["absolute"]["n_matches"] >= 5 and f["absolute"]["rmse_arcsec"] < 0.015
                                     for f in frozen.values()), frozen
    sky = {uid: e["sky_level"] for k, d in done.items() if "/outliers/" in k for uid, e in d["extra"]["exposures"].items()}
    assert len(sky) == 12  # each exposure's sky decided once, in its own visit's task
    # memory: the largest tile task's measured peak within the plan's estimate
    peaks = [d["peak_rss_mb"] for k, d in done.items() if "/tile/" in k]
    assert len(peaks) == 4 and max(peaks) <= tiled.plan_tile_mem_mb, (peaks, tiled.plan_tile_mem_mb)

    r = check(tiled, tmp_path)
    # Tile cores against one mosaic on the same grid from the same _crf files: drizzle adds each
    # input's contribution to an output pixel in input order and only the inputs touching that pixel
    # contribute, so the pixels are expected bit-identical; the tolerance allows float32 rounding of the
    # pixel map (world <-> pixel through a different crpix), rel. 1e-6 of the tile's peak.
    for tile_id, d in r["diffs"].items():
        for arr, v in d.items():
            assert v["nan_mismatch"] == 0 and v["n"] > 10_000, (tile_id, arr, v)
            assert v["max_rel_to_peak"] <= 1e-6, (tile_id, arr, v)
    stars = r["overlap_stars"]
    assert len(stars) >= 5, stars
    assert all(s["merged"] == 1 for s in stars), stars  # every overlap star exactly once
    assert sum(s["tiles"] >= 2 for s in stars) >= 5, stars  # and the tiles really saw them twice or more
    assert r["ids_unique"]


def _order_bounds(values: list[float], k: int) -> tuple[float, float]:
    """Where the median of `values` can go when at most `k` of them are replaced, removed or added:
    between the order statistics k places either side of the middle."""
    v = np.sort(np.asarray([x for x in values if x is not None], float))
    n = len(v)
    return float(v[max(0, (n - 1) // 2 - k)]), float(v[min(n - 1, n // 2 + k)])


def test_per_tile_science_check_agrees_with_the_assembled_mosaic(tiled: Tiled, tmp_path: Path) -> None:
    """Judged tile by tile (stages/tile_science.py: each tile's i2d and own catalog, a truth source in
    the tile whose core holds it, the truth read per tile), the check gives the assembled mosaic's result.

    Why it should, and how far it may not: the assembled i2d is the tiles' core pixels copied
    (tile_merge.assemble), and a tile's pixels beyond its core equal the neighbour's on the one grid
    (the products test: 0 difference, allowed 1e-6 of the peak for float32 rounding), so the predicted
    S/N, isolation and hence the judged sample cannot differ, and the S/N only by float32 rounding of
    ERR (2 float32 eps, relative). The catalog can: the merged catalog keeps a detection in the tile
    whose core holds its *centroid* and drops cross-tile duplicates within DUPLICATE_PX, a tile's own
    catalog keeps all. So a source's match may differ only within edge_band_px (match radius +
    DUPLICATE_PX) of an inner core edge; elsewhere both read the same row (float64 through ECSV):
    magnitudes equal, offsets to float64 rounding of the tile-origin shift (1e-9 px). A median over a
    population with k members in that band may move at most k order statistics; completeness at most
    k / n."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_tile_science_check.py"), str(tiled.survey.config),
                           str(tiled.survey.run), str(tmp_path), FILTER], capture_output=True, text=True,
                          timeout=900, env=engine_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")).removeprefix("RESULT "))
    a, t = r["assembled"], r["tiled"]
    ap, tp = r["assembled_points"], r["tiled_points"]
    band = r["edge_band_px"]
    assert t["tiles"]["judged"] == ["r0c0", "r0c1", "r1c0", "r1c1"] and not t["tiles"]["not_judged"], t["tiles"]
    assert t["passed"]["all_tiles_judged"]
    # every truth source on the grid judged once: owned by one tile, none twice
    assert len(set(tp["row"])) == len(tp["row"])
    assert t["n_input_on_mosaic"] == a["n_input_on_mosaic"] == sum(
        d["n_input_owned"] for d in t["tiles"]["per_tile"].values()) > 100
    assert t["tiles"]["sources_counted_not_kept"] > 0  # the counted (not kept) path is exercised
    # the same sources judged
    judged_a = {row for row, s in zip(ap["row"], ap["sample"], strict=True) if s}
    judged_t = {row for row, s in zip(tp["row"], tp["sample"], strict=True) if s}
    assert judged_a == judged_t and len(judged_a) >= 40, (len(judged_a), judged_a ^ judged_t)
    assert t["n_bright_isolated"] == a["n_bright_isolated"] == len(judged_a)
    assert t["galaxies"]["n_judged"] == a["galaxies"]["n_judged"]
    assert t["galaxies"]["n_isolated_on_mosaic"] == a["galaxies"]["n_isolated_on_mosaic"]
    assert [b["n"] for b in t["galaxies"]["completeness_curve"]["bins"]] == [
        b["n"] for b in a["galaxies"]["completeness_curve"]["bins"]]
    assert [(b["mag_lo"], b["n"], b["n_sample"]) for b in t["completeness_by_mag"]] == [
        (b["mag_lo"], b["n"], b["n_sample"]) for b in a["completeness_by_mag"]]
    # per source: identical away from the inner core edges
    at = {row: i for i, row in enumerate(ap["row"])}
    in_band = set()
    eps32 = float(np.finfo(np.float32).eps)
    for j, row in enumerate(tp["row"]):
        i = at[row]
        assert abs(tp["edge_px"][j] - ap["edge_px"][i]) < 1e-9
        x, y = tp["snr"][j], ap["snr"][i]
        assert (x is None and y is None) or abs(x - y) <= 2 * eps32 * abs(y), (row, x, y)
        if tp["edge_px"][j] <= band:
            in_band.add(row)
            continue
        assert tp["matched"][j] == ap["matched"][i], row
        for key, tol in (("resid_total", 0.0), ("dx", 1e-9), ("dy", 1e-9)):
            x, y = tp[key][j], ap[key][i]
            assert (x is None and y is None) or abs(x - y) <= tol, (row, key, x, y)
    # sources the assembled check kept but the tiled one only counted: neither judged nor matched
    kept = set(tp["row"])
    assert all(not s and not m for row, s, m in zip(ap["row"], ap["sample"], ap["matched"], strict=True)
               if row not in kept)
    # aggregates within what the edge band allows
    k_sample = len(judged_a & in_band)
    assert abs(t["completeness"] - a["completeness"]) <= k_sample / len(judged_a) + 1e-12
    rec_a = [i for i, row in enumerate(ap["row"]) if ap["sample"][i] and ap["matched"][i]]
    for key, value in (("dx", t["offset_px"]["median_dx"]), ("dy", t["offset_px"]["median_dy"])):
        k = sum(ap["row"][i] in in_band for i in rec_a)
        lo, hi = _order_bounds([ap[key][i] for i in rec_a], k)
        assert lo - 1e-9 <= value <= hi + 1e-9, (key, value, lo, hi, k)
    assert a["mag_residual"]["population"] == t["mag_residual"]["population"] == "stars"
    stars_a = [i for i in rec_a if ap["is_star"][i] and ap["resid_total"][i] is not None]
    lo, hi = _order_bounds([ap["resid_total"][i] for i in stars_a], sum(ap["row"][i] in in_band for i in stars_a))
    assert lo - 1e-9 <= t["mag_residual"]["median"] <= hi + 1e-9, (t["mag_residual"], lo, hi)
    # the same verdicts (the science check's own: alignment and sky matching are the run's, added later)
    assert {k: v for k, v in t["passed"].items() if k != "all_tiles_judged"} == a["passed"], (t["passed"], a["passed"])

    # memory follows one tile, not the survey: judging all 4 tiles peaks within 25% of measuring one (each
    # tile's image is about the same size, so a second one held would add ~100%; the kept sources are
    # < 1% here). Without collecting each tile's datamodel (reference cycles) it was 40-48 vs 21 MiB.
    mem = r["memory"]
    assert mem["per_tile_check_mb"] <= 1.25 * max(mem["one_tile_mb"].values()), mem

    # a tile whose catalog is gone and one the mosaic did not make: named with why, the rest judged
    part = r["partial"]
    assert set(part["tiles"]["not_judged"]) == {part["gone"], part["unmade"]}, part["tiles"]
    assert "FileNotFoundError" in part["tiles"]["not_judged"][part["gone"]]
    assert part["tiles"]["not_judged"][part["unmade"]] == "tile task failed: test"
    assert len(part["tiles"]["judged"]) == 2 and part["passed"]["all_tiles_judged"] is False
    assert 0 < part["n_bright_isolated"] < a["n_bright_isolated"]

    # the end-of-run entry when the cores were not assembled (a survey-sized grid)
    entry = r["unassembled_entry"]
    assert entry["i2d"] is None and entry["science"]["tiles"]["judged"] == t["tiles"]["judged"], entry.get(
        "science_error")
    assert entry["science"]["n_bright_isolated"] == a["n_bright_isolated"]
    assert "sky_matching" in entry["science"]["tiles"]["checks_not_made"]
    assert "sky_matching" not in entry["science"]["passed"] and "alignment" in entry["science"]["passed"]
    assert any("judged per tile: 4/4 tiles" in ln for ln in r["unassembled_lines"]), r["unassembled_lines"]
    assert any("sky_matching not checked" in ln for ln in r["unassembled_lines"])


def _copy_without_mosaic(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("mosaic", "summary.json", "provenance.h5"))
    return dest


def _mosaic_cmd(config: Path, out: Path, ranks: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "dream_hpc", "mosaic", str(config), "--out", str(out)]
    return [str(MPIEXEC), "-n", str(ranks), *cmd] if ranks else cmd


def assert_same_products(a: Path, b: Path) -> None:
    """Tile pixel arrays and the merged catalog identical (FITS headers carry dates, so not the bytes)."""
    from astropy.io import fits
    from astropy.table import Table

    names = sorted(p.name for p in (a / "mosaic" / "tiles").glob("*_i2d.fits"))
    assert names and names == sorted(p.name for p in (b / "mosaic" / "tiles").glob("*_i2d.fits"))
    for name in names:
        with fits.open(a / "mosaic" / "tiles" / name) as x, fits.open(b / "mosaic" / "tiles" / name) as y:
            for ext in ("SCI", "ERR", "WHT", "CON"):
                assert np.array_equal(x[ext].data, y[ext].data, equal_nan=True), (name, ext)
    ta = Table.read(a / "mosaic" / f"{PRODUCT}_cat.ecsv", format="ascii.ecsv")
    tb = Table.read(b / "mosaic" / f"{PRODUCT}_cat.ecsv", format="ascii.ecsv")
    assert ta.colnames == tb.colnames and len(ta) == len(tb) > 50
    for col in ta.colnames:
        if hasattr(ta[col], "ra"):  # sky coordinates (sky_centroid, sky_bbox_*)
            assert np.array_equal(ta[col].ra.deg, tb[col].ra.deg, equal_nan=True), col
            assert np.array_equal(ta[col].dec.deg, tb[col].dec.deg, equal_nan=True), col
        else:
            a, b = np.asarray(ta[col]), np.asarray(tb[col])
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), col  # NaN where no flux could be measured


def test_two_ranks_make_bit_identical_tiles_and_catalog(tiled: Tiled, tmp_path: Path) -> None:
    config, run = tiled.survey.config, tiled.survey.run
    two = _copy_without_mosaic(run, tmp_path / "two")
    proc = subprocess.run(_mosaic_cmd(config, two, 2), capture_output=True, text=True, timeout=1200,
                          env=engine_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = {r["rank"] for r in records(two) if r["kind"] == "mosaic_start" and "/tile/" in r["data"]["filter"]}
    assert ranks == {0, 1}, ranks  # both ranks made tiles
    assert_same_products(run, two)


def test_rank_killed_mid_tile_then_rerun_keeps_finished_tiles(tiled: Tiled, tmp_path: Path) -> None:
    config, run = tiled.survey.config, tiled.survey.run
    killed = _copy_without_mosaic(run, tmp_path / "killed")
    copied = max(r["time"] for r in records(killed))  # the journal came along: only newer records count
    p = subprocess.Popen(_mosaic_cmd(config, killed, 2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=engine_env(), cwd=ROOT)
    try:
        def rank1_mid_tile_after_a_tile_done():
            recs = [r for r in records(killed) if r["time"] > copied]
            tiles = [r for r in recs if "/tile/" in str(r.get("data", {}).get("filter"))]
            if not any(r["kind"] == "mosaic_done" for r in tiles):
                return None
            mine = [r for r in tiles if r["rank"] == 1]
            started = {r["data"]["filter"] for r in mine if r["kind"] == "mosaic_start"}
            ended = {r["data"]["filter"] for r in mine if r["kind"] in ("mosaic_done", "mosaic_failed")}
            if started - ended and mine[-1]["kind"] == "step" and mine[-1]["data"]["status"] == "start":
                return mine[-1]["pid"]
            return None

        pid = wait_for(rank1_mid_tile_after_a_tile_done, 900, "rank 1 inside a tile after a tile finished", 0.2)
        os.kill(pid, signal.SIGKILL)
        p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    first = [r for r in records(killed) if r["time"] > copied]
    done_before = {r["data"]["filter"] for r in first if r["kind"] == "mosaic_done" and "/tile/" in r["data"]["filter"]}
    assert done_before
    t_rerun = max(r["time"] for r in first)
    rerun = subprocess.run(_mosaic_cmd(config, killed, None), capture_output=True, text=True, timeout=1200,
                           env=engine_env(), cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    again = {r["data"]["filter"] for r in records(killed) if r["time"] > t_rerun and r["kind"] == "mosaic_start"}
    assert again and not again & done_before, (again, done_before)  # finished tiles were not redone
    killed_tiles = {r["data"]["filter"] for r in first if r["kind"] == "mosaic_start" and "/tile/" in r["data"]["filter"]}
    assert killed_tiles - done_before <= again  # the tile cut short was made again
    assert_same_products(run, killed)


def test_bad_frozen_wcs_is_named_and_never_used(tiled: Tiled, tmp_path: Path) -> None:
    """A visit whose absolute fits matched fewer stars than mosaic.min_matches fails its astrometry
    task naming an exposure and leaves no `_tweakreg` file behind; nothing downstream runs on it."""
    import yaml

    config, run = tiled.survey.config, tiled.survey.run
    astro = {k: d for k, d in mosaic_done(run).items() if "/astrometry/" in k}
    # a visit with more reference stars than any of its exposures matched: a min_matches equal to its
    # reference count lets it try the fit and then distrust every frozen WCS it made
    visit, n_ref = max(((k, d["extra"]["n_refcat_stars"]) for k, d in astro.items()
                        if max(f["absolute"]["n_matches"] for f in d["extra"]["frozen_wcs"].values())
                        < d["extra"]["n_refcat_stars"]), key=lambda kv: kv[1])
    bad = _copy_without_mosaic(run, tmp_path / "bad")
    data = yaml.safe_load(config.read_text())
    data["mosaic"]["min_matches"] = n_ref
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(data))
    (bad / "config.yaml").write_text(strict.read_text())  # the run's own copy: resumed with this config
    proc = subprocess.run(_mosaic_cmd(strict, bad, None), capture_output=True, text=True, timeout=900,
                          env=engine_env(), cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    failed = {r["data"]["filter"]: r["data"] for r in records(bad) if r["kind"] == "mosaic_failed"}
    assert visit in failed, (visit, sorted(failed))
    why = str(failed[visit].get("error"))
    assert "frozen WCS not usable" in why and f"mosaic.min_matches={n_ref}" in why and "_nrcb1" in why, why
    assert set(astro) <= set(failed)  # the others had too few reference stars even to try: also named
    assert not list((bad / "mosaic" / "astrometry").glob("*_tweakreg.fits"))  # never left to be used
    tiles = bad / "mosaic" / "tiles"
    assert not (tiles.exists() and list(tiles.glob("*_i2d.fits")))
    summary = json.loads((bad / "summary.json").read_text())
    assert "error" in summary["mosaics"][FILTER], summary["mosaics"][FILTER]


def test_sky_check_judges_overlaps_and_catches_an_offset(tiled: Tiled, tmp_path: Path) -> None:
    """The sky-matching check (stages/sky_check.py) compares overlapping exposures where skymatch fitted
    them; a level offset of 10 errors added to one exposure after skymatch moves every pair it is in by
    about 10 sigma (a constant offset leaves the errors, which come from the scatter, as they were) and
    fails the check, which passed before."""
    from stdatamodels.jwst import datamodels

    from dream_hpc.stages import sky_check

    run = tiled.survey.run
    crfs = sorted((run / "mosaic" / "outliers").glob("*_crf.fits"))
    i2d = run / "mosaic" / f"{PRODUCT}_i2d.fits"
    before = sky_check.check(crfs, i2d)
    assert before["n_pairs"] >= len(crfs) - 1  # every exposure overlaps another: all judged
    assert before["max_abs_pair_difference_sigma"] <= 5.0, before["worst_pair"]
    victim = crfs[0]
    mine = {(p["a"], p["b"]): p for p in before["pairs"] if victim.name in (p["a"], p["b"])}
    err = max(p["error"] for p in mine.values())
    shifted = tmp_path / victim.name
    with datamodels.open(victim) as model:
        model.data = model.data + np.float32(10.0 * err)
        model.save(shifted)
    bad = sky_check.check([shifted, *crfs[1:]], i2d)
    after = {(p["a"], p["b"]): p for p in bad["pairs"]}
    moved = [abs(after[k]["sigma"] - p["sigma"]) for k, p in mine.items()]
    assert moved and min(moved) > 9.0, moved
    assert all(abs(after[k]["sigma"]) > 5.0 for k in mine), [after[k]["sigma"] for k in mine]
    assert bad["max_abs_pair_difference_sigma"] > 5.0  # the exposure fails the check
