"""Helpers for tests/refkit/test_refkit.py that must run in their own process.

CRDS reads its environment once per process and Mirage reconfigures logging on import, so every
jwst/CRDS/Mirage run goes through `run(kit, action, *args)`, which starts
`python tests/_refkit_fixtures.py ACTION ...` with the kit's offline environment. Each action
writes its results as JSON (or .npz) for the test to assert on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONTEXT = "jwst_0001.pmap"
REQUIRED = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise", "distortion", "flat",
            "photom", "area", "apcorr", "abvegaoffset")
SUB160_FRAME_TIME = 0.27864  # s, NIRCam SUB160 read with one amplifier


def offline_env(kit: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS")}
    env.update(CRDS_MODE="local", CRDS_PATH=str(kit / "crds_cache"), CRDS_CONTEXT=CONTEXT,
               CRDS_SERVER_URL="https://jwst-serverless.stsci.edu", CRDS_READONLY_CACHE="1",
               MIRAGE_DATA=str(kit / "mirage_data"), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def run(kit: Path, action: str, *args: str, cwd: Path | None = None, timeout: float = 300) -> str:
    """Run ACTION in a fresh offline process; returns its combined output (raises on failure)."""
    proc = subprocess.run([sys.executable, str(Path(__file__)), action, str(kit), *args], env=offline_env(kit),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{action} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out


def kit_reference(kit: Path, reftype: str, detector: str | None = "NRCB1", **match: str) -> Path:
    """A reference file of the kit, found through the manifest roles (detector None: kit-wide tables)."""
    files = json.loads((kit / "manifest.json").read_text())["files"]
    want = [f"detector={detector}"] if detector else []
    want += [f"{k}={v}" for k, v in match.items()]
    for rel, entry in files.items():
        role = entry["role"]
        if role.startswith(f"crds reference {reftype} ") and all(w in role for w in want):
            return kit / rel
    raise KeyError(f"no {reftype} {want} in {kit}")


# --- actions (run in the child process) -----------------------------------------------------
def crds_lookup(kit: str, out: str) -> None:
    """Best references for three datasets, for every type the three pipelines prefetch."""
    from jwst.pipeline import Detector1Pipeline, Image2Pipeline, Image3Pipeline
    from stpipe import crds_client

    def requested(*pipelines) -> set[str]:
        types: set[str] = set()
        for pipeline in pipelines:
            types.add(pipeline.get_config_reftype())
            for step in pipeline.step_defs.values():
                types.update(step.reference_file_types)
                types.add(step.get_config_reftype())
        return types

    types = requested(Detector1Pipeline, Image2Pipeline, Image3Pipeline)
    image3 = requested(Image3Pipeline)
    base = {"meta.instrument.name": "NIRCAM", "meta.telescope": "JWST", "meta.exposure.type": "NRC_IMAGE",
            "meta.instrument.pupil": "CLEAR", "meta.exposure.readpatt": "BRIGHT2",
            "meta.observation.date": "2025-06-01", "meta.observation.time": "12:00:00"}
    datasets = {
        "sw": {**base, "meta.instrument.detector": "NRCB1", "meta.instrument.filter": "F150W",
               "meta.subarray.name": "SUB400P"},
        "lw": {**base, "meta.instrument.detector": "NRCBLONG", "meta.instrument.filter": "F277W",
               "meta.subarray.name": "SUB160"},
        "mosaic": {**base, "meta.instrument.detector": "MULTIPLE", "meta.instrument.filter": "F150W",
                   "meta.subarray.name": "FULL"},
    }
    result = {}
    for name, header in datasets.items():
        # a mosaic (DETECTOR=MULTIPLE) only meets Image3's source_catalog lookups
        wanted = image3 if name == "mosaic" else types
        refs = crds_client.get_multiple_reference_paths(header, sorted(wanted), "jwst")
        result[name] = {k: v for k, v in refs.items()}
    Path(out).write_text(json.dumps({"types": sorted(types), "image3": sorted(image3), "refs": result}))


def write_uncal(kit: str, out: str, ngroups: str = "5") -> None:
    """A NRCB1 SUB160 BRIGHT2 uncal built from the kit's own bias, dark and non-linearity, with a
    known count rate from 50 to 10000 DN/s across the columns (reference pixels dark)."""
    from astropy.io import fits
    from stdatamodels.jwst import datamodels as dm

    k = Path(kit)
    ng, nframes, size = int(ngroups), 2, 160

    def sub(path: Path, ext: str) -> np.ndarray:
        return fits.getdata(path, ext)[..., :size, :size].astype(np.float64)  # SUB160 is at (1, 1)

    superbias = sub(kit_reference(k, "superbias"), "SCI")
    coeffs = sub(kit_reference(k, "linearity"), "COEFFS")
    dark = fits.getdata(kit_reference(k, "dark", readpatt="BRIGHT2", subarray="SUB160"), "SCI")[:ng]
    readnoise = sub(kit_reference(k, "readnoise"), "SCI")
    rng = np.random.default_rng(7)
    x = np.arange(size)
    rate = np.broadcast_to(50.0 * 10 ** (x / size * 2.3), (size, size)).copy()
    rate[:4, :] = rate[:, :4] = 0.0  # reference pixels see no light
    frame = np.arange(ng * nframes) + 1
    linear = (rate[None] * SUB160_FRAME_TIME * frame[:, None, None]).reshape(ng, nframes, size, size).mean(1)
    linear += dark + readnoise / np.sqrt(2 * nframes) * rng.standard_normal(linear.shape)

    def poly(v: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = np.zeros_like(v)
        for ck in c[::-1]:
            out = out * v + ck
        return out

    deriv = np.array([i * coeffs[i] for i in range(1, len(coeffs))])
    raw = linear.copy()
    for _ in range(10):  # invert the correction polynomial (what Mirage's unlinearize does)
        raw -= (poly(raw, coeffs) - linear) / poly(raw, deriv)
    raw = np.clip(np.rint(raw + superbias), 0, 65535).astype(np.uint16)

    model = dm.Level1bModel(data=raw[None])
    m = model.meta
    m.telescope = "JWST"
    m.instrument.name, m.instrument.detector, m.instrument.channel, m.instrument.module = "NIRCAM", "NRCB1", "SHORT", "B"
    m.instrument.filter, m.instrument.pupil = "F150W", "CLEAR"
    e = m.exposure
    e.type, e.readpatt, e.nints, e.ngroups, e.nframes, e.groupgap = "NRC_IMAGE", "BRIGHT2", 1, ng, nframes, 0
    e.drop_frames1, e.drop_frames3, e.nresets_at_start, e.nresets_between_ints = 0, 0, 1, 1
    e.frame_time, e.group_time = SUB160_FRAME_TIME, SUB160_FRAME_TIME * nframes
    e.integration_time = e.exposure_time = e.group_time * ng
    e.effective_exposure_time = e.measurement_time = e.group_time * (ng - 1)
    e.duration = e.exposure_time + SUB160_FRAME_TIME
    e.start_time = 60676.5
    e.mid_time = e.start_time + e.exposure_time / 2 / 86400
    e.end_time = e.start_time + e.exposure_time / 86400
    o = m.observation
    o.date, o.time, o.date_beg = "2025-01-01", "12:00:00.000", "2025-01-01T12:00:00.000"
    o.program_number, o.observation_number, o.visit_number = "09999", "001", "001"
    o.visit_group, o.sequence_id, o.activity_id, o.exposure_number = "01", "1", "01", "00001"
    m.visit.type = "PRIME_TARGETED_FIXED"
    s = m.subarray
    s.name, s.xstart, s.ystart, s.xsize, s.ysize, s.fastaxis, s.slowaxis = "SUB160", 1, 1, size, size, 1, -2
    w = m.wcsinfo
    w.v2_ref, w.v3_ref, w.vparity, w.v3yangle, w.roll_ref, w.ra_ref, w.dec_ref = -93.5, -487.0, -1, 0.15, 0.0, 150.0, 2.2
    model.meta.filename = Path(out).name
    model.save(out)
    np.save(out + ".rate.npy", rate)


def detector1(kit: str, uncal: str, out: str) -> None:
    """Detector1 with every reference from the kit; rate, dq and the references used."""
    from jwst.pipeline import Detector1Pipeline

    if not Path(uncal).exists():  # the synthetic exposure, built here to spare a process
        write_uncal(kit, uncal)

    result = Detector1Pipeline.call(uncal, save_results=False)
    refs = {k: v.get("name") for k, v in result.meta.ref_file.instance.items() if isinstance(v, dict)}
    np.savez(out, rate=result.data, dq=result.dq)
    Path(out + ".json").write_text(json.dumps({"refs": refs, "context": result.meta.ref_file.crds.context_used}))


def mirage(kit: str, outdir: str) -> None:
    """One real Mirage ImgSim (NRCB1 SUB160 BRIGHT2 x4, two bright stars, cosmic rays on), then
    Detector1 on its uncal."""
    import time

    import yaml

    from dream_hpc import refkit

    k, out = Path(kit), Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = refkit.mirage_paths(k / "mirage_data", "NRCB1", "F150W", "BRIGHT2", ngroups=4)
    catalog = out / "stars.cat"
    catalog.write_text("# position_pixels\n# abmag\n#\n#\nindex x_or_RA y_or_Dec nircam_f150w_magnitude\n"
                       "1 60.3 70.7 16.5\n2 110.6 40.2 17.0\n")
    none = "None"
    reffiles = {key: str(kit_reference(k, t)) for key, t in
                (("badpixmask", "mask"), ("superbias", "superbias"), ("linearity", "linearity"),
                 ("saturation", "saturation"), ("gain", "gain"), ("astrometric", "distortion"),
                 ("photom", "photom"), ("pixelAreaMap", "area"))}
    params = {
        "Inst": {"instrument": "NIRCam", "mode": "imaging", "use_JWST_pipeline": True},
        "Readout": {"readpatt": "BRIGHT2", "ngroup": 4, "nint": 1, "namp": 1, "resets_bet_ints": 1,
                    "array_name": "NRCB1_SUB160", "intermediate_aperture": none, "PPS_aperture": "NRCB1_SUB160",
                    "filter": "F150W", "pupil": "CLEAR"},
        "Reffiles": {"dark": none, "linearized_darkfile": str(paths["linearized_darkfile"]),
                     "pixelflat": str(paths["pixelflat"]), **reffiles, "illumflat": none, "ipc": none,
                     "invertIPC": False, "occult": none, "transmission": none, "subarray_defs": "config",
                     "readpattdefs": "config", "crosstalk": "config", "filtpupilcombo": "config",
                     "filter_wheel_positions": "config", "flux_cal": "config", "filter_throughput": "config"},
        "nonlin": {"limit": 60000.0, "accuracy": 1e-6, "maxiter": 10, "robberto": False},
        "cosmicRay": {"path": str(paths["cosmic_ray_path"]), "library": "SUNMIN", "scale": 1.0,
                      "suffix": refkit.cosmic_ray_suffix("NRCB1"), "seed": 1234},
        "simSignals": {"pointsource": str(catalog), "gridded_psf_library_row_padding": 4,
                       "psf_wing_threshold_file": "config", "add_psf_wings": False, "psfpath": str(paths["psfpath"]),
                       "psfwfe": refkit.PSF_WFE, "psfwfegroup": refkit.PSF_WFE_GROUP, "galaxyListFile": none,
                       "extended": none, "extendedscale": 1.0, "extendedCenter": "1024,1024",
                       "PSFConvolveExtended": True, "movingTargetList": none, "movingTargetSersic": none,
                       "movingTargetExtended": none, "movingTargetConvolveExtended": True,
                       "movingTargetToTrack": none, "tso_imaging_catalog": none, "tso_grism_catalog": none,
                       "zodiacal": none, "zodiscale": 1.0, "scattered": none, "scatteredscale": 1.0,
                       "bkgdrate": 0.2, "poissonseed": 5678, "photonyield": True, "pymethod": True,
                       "expand_catalog_for_segments": False, "use_dateobs_for_background": False,
                       "signal_low_limit_for_segmap": 0.031, "signal_low_limit_for_segmap_units": "ADU/sec",
                       "add_ghosts": False, "PSFConvolveGhosts": False},
        "Telescope": {"ra": 150.1, "dec": 2.2, "rotation": 0.0, "tracking": "sidereal"},
        "Output": {"directory": str(out), "file": "jw09999001001_01101_00001_nrcb1_uncal.fits", "datatype": "raw",
                   "format": "DMS", "save_intermediates": False, "grism_source_image": False, "unsigned": True,
                   "dmsOrient": True, "program_number": "09999", "title": "refkit test", "PI_Name": "test",
                   "Proposal_category": "GO", "Science_category": "test", "target_name": "T", "target_ra": 150.1,
                   "target_dec": 2.2, "observation_number": "001", "observation_label": "test",
                   "visit_number": "001", "visit_group": "01", "visit_id": "09999001001", "sequence_id": "1",
                   "activity_id": "01", "exposure_number": "00001", "obs_id": "V09999001001P0000000001101",
                   "date_obs": "2025-01-01", "time_obs": "12:00:00.000", "primary_dither_type": "NONE",
                   "total_primary_dither_positions": 1, "primary_dither_position": 1, "subpix_dither_type": none,
                   "total_subpix_dither_positions": 1, "subpix_dither_position": 1, "xoffset": 0.0,
                   "yoffset": 0.0},
    }
    yaml_path = out / "sim.yaml"
    yaml_path.write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.perf_counter()
    from mirage.imaging_simulator import ImgSim

    t1 = time.perf_counter()
    np.random.seed(1)  # dark_prep draws with numpy's global generator
    ImgSim(paramfile=str(yaml_path), offline=True).create()
    t2 = time.perf_counter()
    (out / "timing.json").write_text(json.dumps({"import_s": t1 - t0, "simulate_s": t2 - t1}))
    detector1(kit, str(out / params["Output"]["file"]), str(out / "rate.npz"))


if __name__ == "__main__":
    {"crds_lookup": crds_lookup, "detector1": detector1, "mirage": mirage}[
        sys.argv[1]](*sys.argv[2:])
