"""The science check's verdicts that need the run (truth products, tweakreg's per-group outcome), and the
run's last line: did every science check pass? `dream-hpc survey --strict` exits non-zero when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import RunView
from dream_hpc.core.workunit import WorkUnit


def alignment_check(cfg: SurveyConfig, run: RunDir, view: RunView, filt: str, tweak: dict[str, Any],
                    check: dict[str, Any]) -> dict[str, Any]:
    """Per exposure and filter, the WCS error against the true pointing before/after alignment; sets
    check["passed"]["alignment"] (an exposure left off by more than the tolerance fails it)."""
    from dream_hpc.stages import astrometry_truth, tiles

    units = [WorkUnit.from_dict(p) for p in view.planned.values() if str(p.get("filter", "")).upper() == filt]
    done = [u for u in units if view.units.get(u.unit_id) and view.units[u.unit_id].status == "done"]
    crf_of = tiles.crf_path if cfg.mosaic.mode == "tiles" else astrometry_truth.crf_path
    truth = astrometry_truth.check_exposures(run, done, tweak.get("alignment"), crf_of)
    truth["mosaic_offset"] = astrometry_truth.mosaic_offset_mas(check)
    _astrometry_limit(check, astrometry_truth.absolute_fit_error_mas(tweak.get("alignment")))
    truth["tweakreg_status"] = (tweak.get("alignment") or {}).get("status", "unknown")
    check.setdefault("passed", {})["alignment"] = bool(truth["passed"])
    from dream_hpc.stages.truth_products import write_matched_catalog

    out = {"alignment_truth": truth, "matched_catalog": run.rel(write_matched_catalog(run, filt, check))}
    out["sky"] = sky_matching(run, [crf_of(run, u) for u in done], check)
    out["sky_vs_truth"] = sky_vs_truth(cfg, run, done, check)
    return out


def sky_vs_truth(cfg: SurveyConfig, run: RunDir, done: list[WorkUnit], check: dict[str, Any]) -> dict[str, Any] | None:
    """The calibrated exposures' sky against the injected background (stages/sky_truth.py); sets
    passed["sky_level"] on FULL frames (a subarray's is reported, not judged)."""
    from dream_hpc.stages import sky_truth
    from dream_hpc.stages.contract import product_path
    from dream_hpc.stages.mirage_inputs import background_truth

    sample = sky_truth.sample(sorted(done, key=lambda u: u.unit_id))
    result = sky_truth.check([(product_path(run, u, "image2"), background_truth(cfg, u)) for u in sample],
                             judged=all(u.subarray == "FULL" for u in sample))
    if result is not None:
        result["n_exposures_of_filter"] = len(done)
        if result["judged"]:
            check.setdefault("passed", {})["sky_level"] = result["passed"]
    return result


def _astrometry_limit(check: dict[str, Any], fit_error_mas: float | None) -> None:
    """The mosaic-offset verdict with the limit that allows for the absolute fit's own error."""
    from dream_hpc.stages import science

    if "offset_px" not in check or not check.get("pixel_arcsec"):
        return
    limit = science.offset_limit_px(fit_error_mas, float(check["pixel_arcsec"]))
    check["absolute_fit_error_mas"] = fit_error_mas
    check["offset_limit_px"] = limit
    check.setdefault("passed", {})["astrometry"] = science.astrometry_passed(check, limit)


def tiled_tweakreg(cfg: SurveyConfig, view: RunView, filt: str) -> dict[str, Any]:
    """A tiled mosaic's alignment outcome from its per-visit astrometry tasks (stages/tile_alignment.py),
    in the shape the single Image3 reports it: "fitted" only when every exposure group was aligned."""
    from dream_hpc.stages import tile_alignment
    from dream_hpc.stages.image3 import MAX_FIT_RMSE_PX

    units = [WorkUnit.from_dict(p) for p in view.planned.values() if str(p.get("filter", "")).upper() == filt]
    done = [u for u in units if view.units.get(u.unit_id) and view.units[u.unit_id].status == "done"]
    channel = units[0].channel if units else "SHORT"
    scale = cfg.mosaic.pixel_scale_sw if channel == "SHORT" else cfg.mosaic.pixel_scale_lw
    alignment = tile_alignment.from_tasks(view.mosaic_tasks, filt, done, cfg.mosaic.min_matches,
                                          MAX_FIT_RMSE_PX * scale)
    fitted = alignment["status"] == "fitted"
    return {"fitted": fitted, "alignment": alignment, "status": "per-visit astrometry tasks",
            "reason": "" if fitted else f"{len(alignment['unaligned_groups'])} exposure group(s) not aligned"}


MAX_SKY_PAIR_SIGMA = 5.0  # exposures' levels after skymatch may differ by this many errors of their medians


def sky_matching(run: RunDir, crf_paths: list[Path], check: dict[str, Any]) -> dict[str, Any] | None:
    """Background levels between exposures after skymatch (stages/sky_check.py); sets passed["sky_matching"]."""
    from dream_hpc.stages import sky_check

    crfs = [p for p in crf_paths if p.is_file()]
    i2d = check.get("_i2d")
    if len(crfs) < 2 or not i2d:
        return None
    sky = sky_check.check(crfs, i2d)
    worst = sky["max_abs_pair_difference_sigma"]
    sky["tolerance_sigma"] = MAX_SKY_PAIR_SIGMA
    check.setdefault("passed", {})["sky_matching"] = bool(worst is not None and worst <= MAX_SKY_PAIR_SIGMA)
    return sky


def tweakreg_word(tweak: dict[str, Any]) -> str:
    from dream_hpc.stages.alignment_status import one_line

    alignment = tweak.get("alignment")
    if alignment:
        return one_line(alignment)
    return "fitted" if tweak.get("fitted") else "DID NOT FIT"


def alignment_lines(science: dict[str, Any]) -> list[str]:
    t = science.get("alignment_truth")
    if not t:
        return []

    def fmt(v: dict[str, Any] | None) -> str:
        return "n/a" if not v else f"{v['rms_mas']:.1f} mas rms (mean E {v['de_mas']:+.1f}, N {v['dn_mas']:+.1f})"

    ok = "ok" if t["passed"] else "OFF"
    line = (f"      astrometry vs truth ({t['channel']}, {len(t['exposures'])} exposures): before alignment "
            f"{fmt(t['before'])}; after {fmt(t['after'])}; worst {t['worst_after_mas'] or float('nan'):.1f} mas "
            f"<= {t['tolerance_mas']:.0f} [{ok}]")
    lines = [line]
    sky = science.get("sky")
    if sky and sky.get("max_abs_pair_difference_sigma") is not None:
        ok_sky = "ok" if sky["max_abs_pair_difference_sigma"] <= sky["tolerance_sigma"] else "OFF"
        lines.append(f"      sky matching: overlapping exposures after skymatch differ by <= "
                     f"{sky['max_abs_pair_difference_sigma']:.1f} sigma ({sky['n_pairs']} overlapping pairs) [{ok_sky}]; mosaic "
                     f"background median {sky['mosaic_background_in_pixel_sigma']:+.2f} pixel sigma")
    level = science.get("sky_vs_truth")
    if level:
        lines.append(f"      sky vs truth: calibrated / injected background {level['median_ratio']:.3f} (median of "
                     f"{len(level['exposures'])}; {level['min_ratio']:.3f}-{level['max_ratio']:.3f}), injected "
                     f"{level['injected_mjy_sr']:.4f} MJy/sr ({level['model']}) "
                     + (f"[{'ok' if level['passed'] else 'OFF'}]" if level["judged"] else "[not judged: subarray]"))
    g = science.get("galaxies")
    if g:
        c, ph = g["completeness_curve"], g["aper_total_residual"]

        def mag(v: float | None) -> str:
            return "not reached" if v is None else f"{v:.2f}"

        comp = "n/a" if g["completeness_snr_gt_min"] is None else f"{g['completeness_snr_gt_min']:.0%}"
        resid = ph["median_after_bias_model"]
        lines.append(f"      galaxies: {g['n_judged']} judged (S/N>20, isolated), completeness {comp}; 90%/50% "
                     f"complete at AB {mag(c['mag90'])}/{mag(c['mag50'])}; aper_total - input after the bias model "
                     f"{'n/a' if resid is None else f'{resid:+.3f}'} (n={ph['n']}) [{g['verdict']}]")
    if t["failed_exposures"]:
        lines.append(f"      exposures off by more than {t['tolerance_mas']:.0f} mas after alignment: "
                     f"{', '.join(t['failed_exposures'][:6])}")
    return lines


def failures(summary: dict[str, Any]) -> dict[str, str]:
    """Filter -> what failed (empty when every science check passed)."""
    out = {}
    for filt, m in (summary.get("mosaics") or {}).items():
        if "error" in m:
            out[filt] = "mosaic not made"
        elif not m.get("science"):
            out[filt] = "not checked"
        else:
            bad = [k for k, v in m["science"].get("passed", {}).items() if not v]
            if bad:
                out[filt] = ", ".join(bad)
    return out


def all_passed(summary: dict[str, Any]) -> bool:
    return bool(summary.get("mosaics")) and not failures(summary)


def verdict_line(summary: dict[str, Any]) -> str:
    mosaics = summary.get("mosaics") or {}
    if not mosaics:
        return "science checks: none made (no mosaic)"
    bad = failures(summary)
    if not bad:
        return f"science checks: all passed ({', '.join(sorted(mosaics))})"
    return "science checks: FAILED: " + "; ".join(f"{f} ({why})" for f, why in sorted(bad.items()))


def striping(view: RunView, filt: str) -> dict[str, Any] | None:
    """The rate images' striping (stages/striping.py, recorded by Detector1) over a filter's units."""
    import numpy as np

    amps, excess = [], []
    for uid, plan in view.planned.items():
        u = view.units.get(uid)
        if str(plan.get("filter", "")).upper() != filt or not u or "detector1" not in u.stages:
            continue
        st = ((u.stages["detector1"].get("extra") or {}).get("striping")) or {}
        if st.get("row_median_scatter") is not None:
            amps.append(float(st["row_median_scatter"]))
            excess.append(float(st["excess"]))
    if not amps:
        return None
    return {"n": len(amps), "median_row_scatter_dn_s": float(np.median(amps)),
            "median_excess_over_white": float(np.median(excess)),
            "method": "source-masked row-median scatter of each _rate (DN/s) and its ratio to white noise alone"}
