"""Build a reference kit: validate the request, write CRDS cache + MIRAGE_DATA + manifest, swap in.

The kit is written into a hidden temporary directory beside OUT and renamed into place only when
complete, so an interrupted build never leaves a half kit where a run would find it. Rebuilding
over an existing kit replaces it (it is regenerable bit for bit); any other non-empty directory
is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dream_hpc.core import offline
from dream_hpc.refkit import KIT_VERSION, KitError, nircam
from dream_hpc.refkit.crds_cache import CONTEXT
from dream_hpc.refkit.manifest import MANIFEST, write_manifest

DEFAULT_DETECTORS = ("NRCB1", "NRCB5")
DEFAULT_FILTERS = ("F150W", "F277W")
# What the demo (MEDIUM8 x 4) and the tests (RAPID, BRIGHT2 up to 5 groups) use; each extra group of a
# MEDIUM8 ramp costs Mirage's RAPID dark 10 frames (~8 MB each per detector, ~32 MB each in memory).
DEFAULT_READPATTS = ("RAPID", "BRIGHT2", "MEDIUM8")
DEFAULT_NGROUPS_MAX = 5
DEFAULT_SEED = 20260101
# Independent dark ramps per detector (white + 1/f noise, hot pixels' shot noise); each unit picks one
# from its seed. Real Mirage data ships ~5 per detector; 3 keep the kit at ~2.5 GB for two detectors.
DARK_REALIZATIONS = 3
# Flight NIRCam FULL darks are RAPID ramps of the longest integration (NFRAMES=1, GROUPGAP=0) that jwst's
# dark step averages to each exposure's readout: 187 frames, SCI + ERR float32, ~6.3 GB per detector
# (the seed notes' jwst_nircam_dark_0341.fits reshapes to (187, 2048, 2048)). The default kit writes small
# readout-matched darks instead; `flight_dark_frames` N > 0 writes the FULL darks in the flight format, to
# measure what loading such a dark costs (bench/bench_flight_dark.py), never for the CI kit.
FLIGHT_DARK_FRAMES = 187
MAX_DARK_FRAMES = 400
SOFTWARE = ("jwst", "stdatamodels", "stcal", "crds", "mirage", "pysiaf", "numpy", "astropy", "photutils",
            "asdf", "gwcs")


@dataclass(frozen=True)
class KitPlan:
    """A validated build request."""

    detectors: tuple[nircam.Detector, ...]
    filters: dict[str, tuple[str, ...]]  # detector name -> its filters
    readpatts: dict[str, tuple[int, int]]  # name -> (nframes, groupgap)
    subarrays: dict[str, tuple[nircam.Subarray, ...]]  # detector name -> its subarrays (darks)
    ngroups_max: int
    seed: int
    flight_dark_frames: int = 0  # > 0: FULL darks as flight-format RAPID darks of this many frames

    @property
    def mirage_dark_frames(self) -> int:
        """RAPID frames Mirage's dark needs for the longest requested read pattern."""
        return max(nircam.frames_needed(r, self.ngroups_max) for r in self.readpatts)

    def parameters(self) -> dict:
        return {"detectors": [d.name for d in self.detectors],
                "filters": sorted({f for fs in self.filters.values() for f in fs}),
                "readpatts": sorted(self.readpatts),
                "subarrays": sorted({s.name for ss in self.subarrays.values() for s in ss}),
                "ngroups_max": self.ngroups_max, "seed": self.seed, "flight_dark_frames": self.flight_dark_frames}


def plan_kit(detectors: Sequence[str], filters: Sequence[str], readpatts: Sequence[str], ngroups_max: int,
             seed: int, subarrays: Sequence[str] | None = None, flight_dark_frames: int = 0) -> KitPlan:
    """Check the request before any work; every problem is one line naming the fix."""
    try:
        dets = tuple(dict.fromkeys(nircam.detector(d) for d in detectors))
        readpatt = {r.upper(): nircam.read_pattern(r) for r in readpatts}
        wanted = list(dict.fromkeys(f.strip().upper() for f in filters))
        if not dets or not wanted or not readpatt:
            raise KitError("give at least one detector, one filter and one read pattern")
        for f in wanted:  # unknown or pupil-wheel filters first: that is the clearest message
            nircam.check_filter(nircam.detector("NRCB5" if f in nircam.LW_FILTERS else "NRCB1"), f)
        per_det: dict[str, tuple[str, ...]] = {}
        for det in dets:
            mine = [f for f in wanted if (f in nircam.SW_FILTERS) == det.short_wave]
            if not mine:
                wave = "short" if det.short_wave else "long"
                raise KitError(f"{det.name} is a {wave}-wave detector but none of --filters {' '.join(wanted)} "
                               f"is a {wave}-wave filter; add one")
            per_det[det.name] = tuple(nircam.check_filter(det, f) for f in mine)
        for f in wanted:
            if not any(f in fs for fs in per_det.values()):
                wave = "short" if f in nircam.SW_FILTERS else "long"
                raise KitError(f"filter {f} is a {wave}-wave filter but none of --detectors "
                               f"{' '.join(d.name for d in dets)} is a {wave}-wave detector")
        per_det_sub = {det.name: _subarrays(det, subarrays) for det in dets}
    except nircam.InstrumentError as e:
        raise KitError(str(e)) from None
    if not 1 <= ngroups_max <= 200:
        raise KitError(f"--ngroups-max {ngroups_max}: give 1 to 200 groups")
    if not 0 <= seed < 2**32:
        raise KitError(f"--seed {seed}: give an integer from 0 to 2**32 - 1")
    if flight_dark_frames:
        need = max(nircam.frames_needed(r, ngroups_max) for r in readpatt)
        if not need <= flight_dark_frames <= MAX_DARK_FRAMES:
            raise KitError(f"--flight-dark-frames {flight_dark_frames}: give {need} to {MAX_DARK_FRAMES} frames "
                           f"({need} are what {ngroups_max} groups of {' '.join(sorted(readpatt))} read; flight "
                           f"darks hold {FLIGHT_DARK_FRAMES}), or 0 for readout-matched darks")
        if not any(s.name == "FULL" for subs in per_det_sub.values() for s in subs):
            raise KitError("--flight-dark-frames: flight-format darks are FULL frame; add FULL to --subarrays")
    return KitPlan(detectors=dets, filters=per_det, readpatts=readpatt, subarrays=per_det_sub,
                   ngroups_max=ngroups_max, seed=seed, flight_dark_frames=flight_dark_frames)


def _subarrays(det: nircam.Detector, names: Sequence[str] | None) -> tuple[nircam.Subarray, ...]:
    """The detector's subarrays: the ones asked for (each must exist), or every one it has."""
    if names is None:
        found = []
        for name in nircam.SUBARRAYS:
            with contextlib.suppress(nircam.InstrumentError):
                found.append(nircam.subarray(det, name))
        return tuple(found)
    return tuple(nircam.subarray(det, n) for n in dict.fromkeys(n.upper() for n in names))


def _destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise KitError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise KitError(f"{out}: directory is not empty and holds no reference kit ({MANIFEST}); "
                       "choose an empty or new --out")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in SOFTWARE:
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def build(out: str | Path, detectors: Sequence[str] = DEFAULT_DETECTORS, filters: Sequence[str] = DEFAULT_FILTERS,
          readpatts: Sequence[str] = DEFAULT_READPATTS, ngroups_max: int = DEFAULT_NGROUPS_MAX,
          seed: int = DEFAULT_SEED, subarrays: Sequence[str] | None = None,
          progress: Callable[[str], None] | None = None, flight_dark_frames: int = 0) -> Path:
    """Build the kit into `out`; returns the manifest path. See dream_hpc.refkit for the layout.

    `subarrays` (default: every subarray each detector has) selects the dark references: jwst needs
    one per subarray. `flight_dark_frames` N > 0 writes each detector's FULL dark as one flight-format
    RAPID dark of N frames (see FLIGHT_DARK_FRAMES) serving every read pattern."""
    plan = plan_kit(detectors, filters, readpatts, ngroups_max, seed, subarrays, flight_dark_frames)
    out = Path(out).resolve()
    _destination(out)
    say = progress or (lambda _msg: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(out)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    t0 = time.perf_counter()
    try:
        with offline.network_forbidden():
            _write_kit(tmp, plan, say)
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"kit ready in {time.perf_counter() - t0:.1f} s: {out}")
    return out / MANIFEST


def _remove_stale_builds(out: Path) -> None:
    """Delete temporary kits left by builds that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.building-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()
        os.rename(tmp, out)


def _write_kit(root: Path, plan: KitPlan, say: Callable[[str], None]) -> None:
    from dream_hpc.refkit import crds_cache, crds_refs, distortion, mirage_data, preview, psf
    from dream_hpc.refkit.detector import make_detector

    t0 = time.perf_counter()
    crds_root = root / "crds_cache"
    refdir = crds_root / "references" / "jwst" / "nircam"
    mirage_root = root / "mirage_data"
    refdir.mkdir(parents=True)
    mirage_root.mkdir(parents=True)
    roles: dict[str, str] = {}

    def role(path: Path, what: str) -> None:
        roles[path.relative_to(root).as_posix()] = what

    reftypes = crds_cache.pipeline_reftypes()
    say(f"{len(reftypes)} reference types requested by Detector1, Image2 and Image3 "
        f"({time.perf_counter() - t0:.1f} s)")

    # one PSF per filter and channel, shared by the channel's detectors; APCORR measured on it
    psfs: dict[str, psf.PsfModel] = {}
    apcorr: dict[str, list[tuple]] = {}
    zps: dict[str, list[nircam.Zeropoint]] = {}
    for det in plan.detectors:
        for filt in plan.filters[det.name]:
            zps.setdefault(filt, []).append(nircam.zeropoint(det, filt))
            if filt not in psfs:
                fwhm = nircam.psf_fwhm_arcsec(zps[filt][0]) / nircam.NOMINAL_SCALE[det.channel]
                psfs[filt] = psf.effective_psf(fwhm)
                apcorr[filt] = psf.apcorr_rows(psfs[filt])
    say(f"PSFs and aperture corrections for {', '.join(sorted(psfs))} ({time.perf_counter() - t0:.1f} s)")

    writer = crds_refs.Writer(refdir)
    checks: dict[str, dict] = {}
    with crds_refs.reproducible_writes():
        for det in plan.detectors:
            t1 = time.perf_counter()
            geom = distortion.geometry(det)
            sky, pix = distortion.max_offset_from_pysiaf(det, geom.model)
            checks[det.name] = {"distortion_vs_pysiaf_arcsec": sky, "distortion_roundtrip_pixels": pix,
                                "pixel_area_sr": geom.nominal_area_sr,
                                "relative_area_range": [float(geom.relative_area.min()),
                                                        float(geom.relative_area.max())]}
            model = make_detector(det, plan.seed, geom.relative_area)
            filters = plan.filters[det.name]
            crds_refs.write_detector_refs(writer, model, geom, {f: nircam.zeropoint(det, f) for f in filters},
                                          plan.readpatts, plan.ngroups_max, list(plan.subarrays[det.name]),
                                          plan.flight_dark_frames)
            for filt in filters:
                role(mirage_data.write_psf(mirage_root, det, filt, psfs[filt]),
                     f"mirage gridded PSF library {det.name} {filt}/CLEAR")
                role(mirage_data.write_flat(mirage_root, model, filt),
                     f"mirage pixelflat (relative QE) {det.name} {filt}/CLEAR")
            for k in range(DARK_REALIZATIONS):
                role(mirage_data.write_dark(mirage_root, model, plan.mirage_dark_frames, k),
                     f"mirage linearized dark {det.name} RAPID x{plan.mirage_dark_frames} frames, realization {k}")
            for path in mirage_data.write_cosmic_rays(mirage_root, det, plan.seed):
                role(path, f"mirage cosmic-ray library {det.name}")
            first = filters[0]
            role(preview.write_preview(root / f"preview_{det.name.lower()}.png", model, first, psfs[first],
                                       apcorr[first]), f"preview figure {det.name}")
            del model
            say(f"{det.name}: references, dark, flats, PSFs, cosmic rays ({time.perf_counter() - t1:.1f} s)")
        crds_refs.write_catalog_refs(writer, apcorr, zps)

    for ref in writer.written:
        what = ", ".join(f"{k}={v}" for k, v in ref.describes.items())
        role(ref.path, f"crds reference {ref.reftype}" + (f" ({what})" if what else ""))
    selector = crds_cache.write_cache(crds_root, writer.written, reftypes)
    crds_cache.check_mappings(crds_root)
    for path in (crds_root / "mappings" / "jwst").iterdir():
        role(path, "crds mapping")
    for path in (crds_root / "config" / "jwst").iterdir():
        role(path, "crds config")

    header = {
        "kit": "dream-hpc offline reference kit (synthetic NIRCam imaging)",
        "kit_version": KIT_VERSION,
        "context": CONTEXT,
        "crds_path": "crds_cache",
        "mirage_data": "mirage_data",
        "parameters": plan.parameters(),
        "mirage": {"psfwfe": mirage_data.PSF_WFE, "psfwfegroup": mirage_data.PSF_WFE_GROUP,
                   "cosmic_ray_libraries": list(mirage_data.CR_LIBRARIES),
                   "linearized_dark_frames": plan.mirage_dark_frames, "dark_realizations": DARK_REALIZATIONS},
        "reftypes": selector,
        "checks": checks,
        "software": _versions(),
    }
    _, digest = write_manifest(root, roles, header)
    say(f"manifest: {len(roles)} files, sha256 {digest[:16]}... ({time.perf_counter() - t0:.1f} s)")
