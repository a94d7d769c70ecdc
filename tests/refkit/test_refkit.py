"""The offline reference kit against the real jwst, CRDS, pysiaf and Mirage (no mocks).

Uses the session kit (`refkit_dir`: build/refkit from `make kit`, or a fresh default build).
CRDS, jwst and Mirage runs happen in child processes (tests/_refkit_fixtures.py): CRDS reads its
environment once per process and Mirage reconfigures logging on import.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _refkit_fixtures import REQUIRED, kit_reference, run

from dream_hpc import refkit
from dream_hpc.refkit.builder import plan_kit
from dream_hpc.refkit.manifest import manifest_sha256

pytestmark = pytest.mark.timeout(600)


def mirage_zeropoints() -> dict[tuple[str, str], dict[str, float]]:
    """Mirage's own zeropoint table, parsed here independently of the kit code."""
    import mirage

    table = Path(mirage.__file__).parent / "config" / "NIRCam_zeropoints.list"
    lines = table.read_text().splitlines()
    head = lines[0].split()
    rows = {}
    for line in lines[1:]:
        r = dict(zip(head, line.split(), strict=True))
        if r["Pupil"] == "CLEAR":
            rows[(r["Filter"], r["Detector"])] = {k: float(r[k]) for k in ("ABMAG", "VEGAMAG", "PHOTFNU")}
    return rows


def test_manifest_covers_every_file(refkit_dir: Path) -> None:
    manifest = json.loads((refkit_dir / "manifest.json").read_text())
    assert manifest["context"] == refkit.CONTEXT
    assert manifest["kit_version"] == refkit.KIT_VERSION
    assert manifest_sha256(refkit_dir)  # the recorded hash matches the manifest's bytes
    on_disk = {p.relative_to(refkit_dir).as_posix() for p in refkit_dir.rglob("*") if p.is_file()}
    listed = set(manifest["files"])
    assert on_disk - listed <= {"manifest.json", "manifest.json.sha256", ".built"}
    assert listed <= on_disk
    for rel in ("crds_cache/config/jwst/server_config", "crds_cache/mappings/jwst/" + refkit.CONTEXT):
        entry = manifest["files"][rel]
        assert entry["size"] == (refkit_dir / rel).stat().st_size and len(entry["sha256"]) == 64 and entry["role"]
    config = eval((refkit_dir / "crds_cache/config/jwst/server_config").read_text())  # a dict literal
    assert {"observatory", "operational_context", "bad_files_list", "force_remote_mode", "last_synced"} <= set(config)
    assert (refkit_dir / "crds_cache/config/jwst/ref_cache_subdir_mode").read_text().strip() == "instrument"


def test_mapping_checksums_are_valid(refkit_dir: Path) -> None:
    import hashlib

    for path in (refkit_dir / "crds_cache/mappings/jwst").iterdir():
        text = path.read_text()
        recorded = [line.split("'")[3] for line in text.splitlines() if "'sha1sum'" in line]
        body = "".join(line for line in text.splitlines(True) if "sha1sum" not in line)
        assert recorded == [hashlib.sha1(body.encode()).hexdigest()], path.name


def test_crds_resolves_every_prefetched_type(refkit_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lookup.json"
    log = run(refkit_dir, "crds_lookup", str(out))
    assert "CRDS - ERROR" not in log
    result = json.loads(out.read_text())
    assert len(result["types"]) > 40 and "pars-detector1pipeline" in result["types"]
    for name, refs in result["refs"].items():
        assert set(refs) == set(result["image3" if name == "mosaic" else "types"]), name
        for reftype, path in refs.items():
            assert path.upper().startswith("N/A") or Path(path).is_file(), (name, reftype, path)
        wanted = ("apcorr", "abvegaoffset") if name == "mosaic" else REQUIRED
        for reftype in wanted:
            assert Path(refs[reftype]).is_file(), (name, reftype, refs[reftype])
    assert Path(result["refs"]["sw"]["dark"]).name != Path(result["refs"]["lw"]["dark"]).name


def test_distortion_matches_pysiaf(refkit_dir: Path) -> None:
    from stdatamodels.jwst.datamodels import DistortionModel, PixelAreaModel

    from dream_hpc.plan.footprint import nircam_siaf

    siaf = nircam_siaf()
    g = np.linspace(0, 2047, 9)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    for det, dms in (("NRCB1", "NRCB1"), ("NRCB5", "NRCBLONG")):
        with DistortionModel(str(kit_reference(refkit_dir, "distortion", det))) as dist:
            assert dist.meta.instrument.detector == dms and dist.meta.instrument.p_pupil.startswith("CLEAR|")
            v2, v3 = dist.model(x, y)
            xb, yb = dist.model.inverse(v2, v3)
        ap = siaf[f"{det}_FULL"]
        v2s, v3s = ap.sci_to_tel(x + 1, y + 1)  # SIAF pixels are 1-based
        assert np.max(np.hypot(v2 - v2s, v3 - v3s)) < 1e-3  # arcsec
        assert np.max(np.hypot(xb - x, yb - y)) < 0.01  # pixels, Idl2Sci inverse
        with PixelAreaModel(str(kit_reference(refkit_dir, "area", det))) as area:
            nominal = ap.XSciScale * ap.YSciScale
            assert area.meta.photometry.pixelarea_arcsecsq == pytest.approx(nominal, rel=1e-3)
            assert area.data[1023:1025, 1023:1025].mean() == pytest.approx(1.0, abs=1e-4)
            assert 0.95 < area.data.min() < area.data.max() < 1.06


def test_photom_matches_mirage_zeropoints(refkit_dir: Path) -> None:
    from stdatamodels.jwst.datamodels import ABVegaOffsetModel, NrcImgPhotomModel

    zps = mirage_zeropoints()
    for det, filt in (("NRCB1", "F150W"), ("NRCB5", "F277W")):
        zp = zps[(filt, det)]
        with NrcImgPhotomModel(str(kit_reference(refkit_dir, "photom", det))) as photom:
            row = [r for r in photom.phot_table if r["filter"] == filt and r["pupil"] == "CLEAR"]
            pixar = photom.meta.photometry.pixelarea_steradians
        assert len(row) == 1
        # 1 DN/s calibrated to MJy/sr, times the pixel solid angle, is Mirage's PHOTFNU in MJy
        assert row[0]["photmjsr"] * pixar == pytest.approx(zp["PHOTFNU"] * 1e17, rel=1e-5)
        ab_of_one_dn = -2.5 * math.log10(row[0]["photmjsr"] * pixar * 1e6 / 3631.0)
        assert ab_of_one_dn == pytest.approx(zp["ABMAG"], abs=1e-4)
    with ABVegaOffsetModel(str(kit_reference(refkit_dir, "abvegaoffset", None))) as ab:
        offsets = {r["filter"]: float(r["abvega_offset"]) for r in ab.abvega_offset}
    assert offsets["F150W"] == pytest.approx(zps[("F150W", "NRCB1")]["ABMAG"] - zps[("F150W", "NRCB1")]["VEGAMAG"],
                                             abs=0.01)


def test_psf_library_and_apcorr_agree(refkit_dir: Path) -> None:
    from astropy.io import fits
    from stdatamodels.jwst.datamodels import NrcImgApcorrModel

    paths = refkit.mirage_paths(refkit_dir / "mirage_data", "NRCB1", "F150W", "BRIGHT2")
    (psf_file,) = paths["psfpath"].glob("nircam_nrcb1_f150w_clear_*_predicted_realization0.fits")
    with fits.open(psf_file) as h:
        cube, over = h[0].data, h[0].header["OVERSAMP"]
        assert h[0].header["DETECTOR"] == "NRCB1" and "predicted" in h[0].header["OPD_FILE"]
    assert cube.sum() / over**2 == pytest.approx(1.0, abs=1e-5)  # every count Mirage assigns is kept
    row = cube[0][cube.shape[1] // 2]
    above = np.flatnonzero(row > row.max() / 2)
    fwhm_arcsec = (above[-1] - above[0] + 1) / over * 0.031
    assert 0.04 < fwhm_arcsec < 0.08  # NIRCam F150W ~0.05" (pixel-convolved here)
    with NrcImgApcorrModel(str(kit_reference(refkit_dir, "apcorr", None))) as model:
        apcorr = model.apcorr_table
    rows = apcorr[(apcorr["filter"] == "F150W") & (apcorr["pupil"] == "CLEAR")]
    ee = np.round(rows["eefraction"] * 100).astype(int)
    assert {30, 50, 70} <= set(ee)  # source_catalog's default apertures
    assert np.all(np.diff(rows["radius"]) > 0)
    # the sky annulus lies beyond the PSF, so the correction is exactly 1 / encircled energy
    assert np.allclose(rows["apcorr"] * rows["eefraction"], 1.0, atol=0.01)
    assert rows["skyin"][0] * 0.031 > 0.4  # arcsec


@pytest.mark.slow
def test_detector1_recovers_injected_rate(refkit_dir: Path, tmp_path: Path) -> None:
    uncal = tmp_path / "jw09999001001_01101_00001_nrcb1_uncal.fits"
    out = tmp_path / "rate.npz"
    log = run(refkit_dir, "detector1", str(uncal), str(out))  # writes the synthetic uncal first
    assert "CRDS - ERROR" not in log
    used = json.loads(Path(str(out) + ".json").read_text())
    assert used["context"] == refkit.CONTEXT
    assert used["refs"]["dark"].startswith("crds://jwst_nircam_dark_")
    got = np.load(out)
    rate, dq = got["rate"], got["dq"]
    injected = np.load(str(uncal) + ".rate.npy")
    good = np.isfinite(rate) & (dq & 1 == 0) & (injected > 0)
    assert good.mean() > 0.9
    for lo, hi in ((50, 200), (200, 1000), (1000, 4000), (4000, 10001)):  # up to ~28000 DN: non-linear
        sel = good & (injected >= lo) & (injected < hi)
        assert np.median(rate[sel] / injected[sel]) == pytest.approx(1.0, abs=0.01), (lo, hi)


@pytest.mark.slow
def test_mirage_simulates_with_the_kit(refkit_dir: Path, tmp_path: Path) -> None:
    from astropy.io import fits

    sim = tmp_path / "sim"
    run(refkit_dir, "mirage", str(sim), cwd=tmp_path)  # Mirage writes mirage_latest.log into cwd
    uncal = sim / "jw09999001001_01101_00001_nrcb1_uncal.fits"
    with fits.open(uncal) as h:
        assert h["SCI"].data.shape == (1, 4, 160, 160)
        assert h[0].header["DETECTOR"] == "NRCB1" and h[0].header["SUBARRAY"] == "SUB160"
    assert (sim / "jw09999001001_01101_00001_nrcb1_uncal_cosmicrays.list").stat().st_size > 0
    timing = json.loads((sim / "timing.json").read_text())
    print(f"Mirage: import {timing['import_s']:.1f} s, simulation {timing['simulate_s']:.1f} s")

    rate = np.load(sim / "rate.npz")["rate"]  # Detector1 ran on the uncal in the same process
    seed = fits.getdata(sim / "jw09999001001_01101_00001_nrcb1_uncal_F150W_CLEAR_final_seed_image.fits", 1)
    qe = fits.getdata(refkit.mirage_paths(refkit_dir / "mirage_data", "NRCB1", "F150W", "BRIGHT2")["pixelflat"], 1)
    expected = seed * qe[:160, :160]  # what Mirage put on the detector, in DN/s
    yy, xx = np.mgrid[0:160, 0:160]
    zp = mirage_zeropoints()[("F150W", "NRCB1")]["ABMAG"]
    for x, y, mag in ((60.3, 70.7, 16.5), (110.6, 40.2, 17.0)):
        r = np.hypot(xx - x, yy - y)
        ap = (r < 16.5) & np.isfinite(rate)
        sky = np.nanmedian(rate[(r > 18) & (r < 26)])
        measured = np.sum(rate[ap] - sky)
        simulated = np.sum(expected[ap] - 0.2 * qe[:160, :160][ap])
        # Mirage's star flux is its zeropoint count rate; Detector1 returns it through the kit
        assert np.sum(seed[r < 16.5] - 0.2) == pytest.approx(10 ** (-0.4 * (mag - zp)), rel=0.01)
        assert measured == pytest.approx(simulated, rel=0.03), (mag, measured, simulated)


def test_kit_is_written_from_the_seeded_detector_model(refkit_dir: Path) -> None:
    from astropy.io import fits

    from dream_hpc.refkit import nircam
    from dream_hpc.refkit.detector import make_detector

    seed = json.loads((refkit_dir / "manifest.json").read_text())["parameters"]["seed"]
    det = nircam.detector("NRCB5")
    ones = np.ones((2048, 2048), np.float32)
    model, other = make_detector(det, seed, ones), make_detector(det, seed + 1, ones)
    for reftype, ext, name in (("superbias", "SCI", "superbias"), ("gain", "SCI", "gain"),
                               ("readnoise", "SCI", "readnoise"), ("mask", "DQ", "dq")):
        written = fits.getdata(kit_reference(refkit_dir, reftype, "NRCB5"), ext)
        assert np.array_equal(written, getattr(model, name)), reftype  # same seed, same arrays
        assert not np.array_equal(written, getattr(other, name)), reftype  # the seed matters
    dq = model.dq
    assert dq[0, 0] == 2**31 and not (dq[:4] & 1).any()  # border: REFERENCE_PIXEL only, never DO_NOT_USE
    assert 0.01 < np.mean((dq[4:-4, 4:-4] & ~np.uint32(2**31)) != 0) < 0.05  # a few % bad pixels


@pytest.mark.slow
def test_build_is_reproducible(tmp_path: Path) -> None:
    """Two builds with one seed but different string-hash seeds give the same bytes."""
    procs = []
    for name, hash_seed in (("a", "1"), ("b", "2")):  # in parallel: they are independent
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dream_hpc", "refkit", "build", "--out", str(tmp_path / name), "--seed", "7",
             "--detectors", "NRCB5", "--filters", "F277W", "--readpatt", "RAPID", "--ngroups-max", "2",
             "--subarrays", "SUB160"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    assert manifest_sha256(tmp_path / "a") == manifest_sha256(tmp_path / "b")
    files = json.loads((tmp_path / "a/manifest.json").read_text())["files"]
    for rel, entry in files.items():  # the manifest is true to the files
        assert (tmp_path / "b" / rel).stat().st_size == entry["size"]


def test_bad_requests_fail_in_one_line(tmp_path: Path) -> None:
    cases = [
        (["NRCB9"], ["F150W"], "unknown NIRCam detector"),
        (["NRCB1"], ["F277W"], "NRCB1 is a short-wave detector but none of --filters F277W"),
        (["NRCB1", "NRCB5"], ["F150W"], "NRCB5 is a long-wave detector.*add one"),
        (["NRCB1"], ["F150W", "F277W"], "F277W is a long-wave filter but none of --detectors"),
        (["NRCB1"], ["F999W"], "unknown NIRCam filter"),
    ]
    for detectors, filters, words in cases:
        with pytest.raises(refkit.KitError, match=words):
            plan_kit(detectors, filters, ["BRIGHT2"], 4, 1)
    with pytest.raises(refkit.KitError, match="read pattern"):
        plan_kit(["NRCB1"], ["F150W"], ["FAST9"], 4, 1)
    (tmp_path / "notakit").mkdir()
    (tmp_path / "notakit" / "precious.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "dream_hpc", "refkit", "build", "--out", str(tmp_path / "notakit")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "not empty" in proc.stderr
    assert (tmp_path / "notakit" / "precious.txt").read_text() == "keep me"


def test_mirage_paths_names_what_is_missing(refkit_dir: Path) -> None:
    md = refkit_dir / "mirage_data"
    paths = refkit.mirage_paths(md, "NRCB5", "F277W", "BRIGHT2", ngroups=4)
    assert {"linearized_darkfile", "psfpath", "cosmic_ray_path", "pixelflat"} <= set(paths)
    assert all(p.exists() for p in paths.values())
    with pytest.raises(refkit.KitError, match="--filters F200W"):
        refkit.mirage_paths(md, "NRCB1", "F200W", "BRIGHT2")
    with pytest.raises(refkit.KitError, match="short-wave filter"):
        refkit.mirage_paths(md, "NRCB5", "F150W", "BRIGHT2")
    with pytest.raises(refkit.KitError, match="--readpatt DEEP8"):
        refkit.mirage_paths(md, "NRCB1", "F150W", "DEEP8")
    with pytest.raises(refkit.KitError, match="--ngroups-max 50"):
        refkit.mirage_paths(md, "NRCB1", "F150W", "BRIGHT2", ngroups=50)
