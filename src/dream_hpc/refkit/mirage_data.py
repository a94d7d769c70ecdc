"""The MIRAGE_DATA tree: gridded PSF library, linearized darks, cosmic-ray library, QE flats.

Formats are the ones Mirage 2.5 reads (checked against its source):
- PSF library (psf_selection.get_gridded_psf_library): nircam_<det>_<filter>_<pupil>_fovp*_samp*
  _npsf*_<wfe>_realization<n>.fits, primary HDU an (npsf, ny, nx) oversampled cube with DET_YX<i>,
  OVERSAMP, INSTRUME, DETECTOR, FILTER, PUPIL, OPD_FILE (naming the wfe), OPDSLICE (= realization).
- Linearized dark (dark_prep): must be RAPID; any other pattern leaves no zero frame and
  dark_prep fails when it assembles its output. SCI = linear dark signal, SBANDREFPIX = superbias +
  reference-pixel signal, (nint, nframes, 2048, 2048); dark_prep averages frames into groups and
  needs ngroups * (nframes + groupgap) frames. One file per detector directory: with NINT > 1
  dark_prep picks darks from every *.fits beside the one named.
- Cosmic rays (obs_generator.read_cr_files / do_cosmic_rays): CRs_MCD1.7_<LIBRARY>_<00..09>_<suffix>
  .fits, ext 1 an (n, 21, 21) stack in electrons; Mirage draws stamp int(random() * 1000), so each
  file must hold 1000 stamps and there must be all ten.
- Flats (obs_generator.add_flatfield_effects): Mirage multiplies the ramp by ext 1 of `pixelflat`.
  Give it the QE flat from here, not the CRDS flat (which also carries the pixel area).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dream_hpc.refkit import nircam
from dream_hpc.refkit.detector import DetectorModel, rng_for
from dream_hpc.refkit.nircam import FULL, FULL_FRAME_TIME, Detector, InstrumentError
from dream_hpc.refkit.psf import OVERSAMPLE, STAMP, PsfModel

PSF_WFE = "predicted"  # simSignals: psfwfe
PSF_WFE_GROUP = 0  # simSignals: psfwfegroup
CR_LIBRARIES = ("SUNMIN", "SUNMAX", "FLARES")
CR_FILES, CR_STAMPS, CR_SIZE = 10, 1000, 21
# median deposited charge (e-) per event: flares are dominated by slower, more ionising protons
CR_MEDIAN_CHARGE = {"SUNMIN": 1800.0, "SUNMAX": 1500.0, "FLARES": 4000.0}
IPC_NEIGHBOUR, IPC_DIAGONAL = 0.016, 0.002
DARK_BSCALE = 0.5  # DN per stored integer in the linearized dark's SCI
PIXEL_DEPTH_OVER_PITCH = 0.33  # HgCdTe absorber ~6 um thick under 18 um pixels: track length scale


def psf_dir(root: Path) -> Path:
    return root / "nircam" / "gridded_psf_library"


def psf_file(root: Path, det: Detector, filt: str) -> Path:
    return psf_dir(root) / (f"nircam_{det.name.lower()}_{filt.lower()}_clear_fovp{STAMP}_samp{OVERSAMPLE}_npsf1_"
                            f"{PSF_WFE}_realization{PSF_WFE_GROUP}.fits")


def dark_file(root: Path, det: Detector, realization: int = 0) -> Path:
    """Realization 0 where kits always had it; the others each in a directory of their own (dark_prep
    draws from every *.fits beside the file it is given when NINT > 1)."""
    base = root / "nircam" / "darks" / "linearized" / det.mirage_suffix
    if realization:
        base = base / f"realization{realization}"
    return base / f"dreamkit_{det.name.lower()}_rapid_linear_dark.fits"


def dark_realizations(root: Path, det: Detector) -> int:
    """How many dark realizations the kit holds for `det` (0, 1, 2, ... without gaps)."""
    n = 0
    while dark_file(root, det, n).is_file():
        n += 1
    return n


def cr_dir(root: Path) -> Path:
    return root / "nircam" / "cosmic_ray_library"


def cr_suffix(det: Detector) -> str:
    """cosmicRay: suffix for `det` (Mirage's naming, e.g. IPC_NIRCam_B1)."""
    return f"IPC_NIRCam_{det.mirage_suffix}"


def flat_file(root: Path, det: Detector, filt: str) -> Path:
    return root / "nircam" / "flats" / f"dreamkit_{det.name.lower()}_{filt.lower()}_clear_qe_flat.fits"


# --- writers ---------------------------------------------------------------------------------
def write_psf(root: Path, det: Detector, filt: str, psf: PsfModel) -> Path:
    from astropy.io import fits

    path = psf_file(root, det, filt)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdu = fits.PrimaryHDU(psf.data[None].astype(np.float32))
    h = hdu.header
    h["DET_YX0"] = (f"({(FULL - 1) / 2:.1f}, {(FULL - 1) / 2:.1f})", "one PSF serves the whole detector")
    h["NUM_PSFS"] = 1
    h["OVERSAMP"] = OVERSAMPLE
    h["DET_SAMP"] = OVERSAMPLE
    h["FOVPIXEL"] = STAMP
    h["INSTRUME"] = "NIRCam"
    h["DETECTOR"] = det.name
    h["FILTER"] = filt
    h["PUPIL"] = "CLEAR"
    h["OPD_FILE"] = (f"synthetic_{PSF_WFE}", "Mirage reads the wavefront-error kind from this name")
    h["OPDSLICE"] = PSF_WFE_GROUP
    h["FWHMPIX"] = (round(psf.fwhm_pix, 6), "FWHM of the optical PSF, detector pixels")
    h["PSFMODEL"] = ("Moffat x pixel, tapered", "dream-hpc refkit synthetic PSF")
    h["PSFNORM"] = (1.0, "sum / OVERSAMP**2")
    hdu.writeto(path, overwrite=True)
    return path


def write_dark(root: Path, model: DetectorModel, nframes: int, realization: int = 0) -> Path:
    """The RAPID linearized dark for `model`, `nframes` frames (full frame), one realization."""
    from astropy.io import fits

    det = model.det
    signal, bias = model.dark_ramp(nframes, realization)
    h0 = fits.PrimaryHDU()
    for key, value in dict(READPATT="RAPID", NINTS=1, NGROUPS=nframes, NFRAMES=1, NSKIP=0, GROUPGAP=0,
                           TFRAME=FULL_FRAME_TIME, TGROUP=FULL_FRAME_TIME, DETECTOR=det.dms, INSTRUME="NIRCAM",
                           FASTAXIS=det.fastaxis, SLOWAXIS=det.slowaxis, EXP_TYPE="NRC_DARK",
                           SUBARRAY="FULL", KITSEED=model.seed, DARKREAL=realization).items():
        h0.header[key] = value
    h0.header["NOISE1F"] = ("NGHXRG c_pink+u_pink", "1/f readout noise (Rauscher 2015, PASP 127, 1144)")
    path = dark_file(root, det, realization)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The signal is stored as 16-bit integers scaled by DARK_BSCALE (read back as float32): half the
    # bytes, and the 0.14 DN rms rounding is nothing next to the ~8 DN read noise per frame.
    # Only DO_NOT_USE hot pixels in very long ramps can reach the clip.
    sci = fits.ImageHDU(np.clip(np.rint(signal / DARK_BSCALE), -32768, 32767).astype(np.int16), name="SCI")
    sci.header["BSCALE"] = DARK_BSCALE
    sci.header["BZERO"] = 0.0
    sci.header["BUNIT"] = "DN"
    fits.HDUList([h0, sci, fits.ImageHDU(bias, name="SBANDREFPIX")]).writeto(path, overwrite=True)
    return path


def write_flat(root: Path, model: DetectorModel, filt: str) -> Path:
    from astropy.io import fits

    path = flat_file(root, model.det, filt)
    path.parent.mkdir(parents=True, exist_ok=True)
    h0 = fits.PrimaryHDU()
    for key, value in dict(INSTRUME="NIRCAM", DETECTOR=model.det.dms, FILTER=filt, PUPIL="CLEAR", SUBARRAY="FULL",
                           REFTYPE="FLAT", KITSEED=model.seed).items():
        h0.header[key] = value
    h0.header["COMMENT"] = "relative QE only: the CRDS flat is this times the relative pixel area"
    fits.HDUList([h0, fits.ImageHDU(model.qe(filt), name="SCI")]).writeto(path, overwrite=True)
    return path


def cosmic_ray_stamps(rng: np.random.Generator, library: str, n: int = CR_STAMPS) -> np.ndarray:
    """(n, 21, 21) int32 electron stamps: straight tracks (isotropic incidence) with diffusion and IPC."""
    charge = np.clip(rng.lognormal(np.log(CR_MEDIAN_CHARGE[library]), 1.0, n), 150.0, 2.0e5)
    cos_theta = np.sqrt(rng.random(n))  # isotropic flux through a plane
    length = np.minimum(PIXEL_DEPTH_OVER_PITCH * np.sqrt(1 - cos_theta**2) / cos_theta, 9.0)
    phi = rng.uniform(0, 2 * np.pi, n)
    centre = CR_SIZE // 2 + rng.uniform(-0.5, 0.5, (n, 2))
    steps = 24
    t = (np.arange(steps) + 0.5) / steps - 0.5
    x = centre[:, :1] + np.cos(phi)[:, None] * length[:, None] * t + rng.normal(0, 0.25, (n, steps))
    y = centre[:, 1:] + np.sin(phi)[:, None] * length[:, None] * t + rng.normal(0, 0.25, (n, steps))
    ix = np.clip(np.rint(x).astype(int), 1, CR_SIZE - 2)
    iy = np.clip(np.rint(y).astype(int), 1, CR_SIZE - 2)
    stamps = np.zeros((n, CR_SIZE, CR_SIZE))
    idx = np.repeat(np.arange(n), steps)
    np.add.at(stamps, (idx, iy.ravel(), ix.ravel()), np.repeat(charge / steps, steps))
    kernel = np.array([[IPC_DIAGONAL, IPC_NEIGHBOUR, IPC_DIAGONAL],
                       [IPC_NEIGHBOUR, 1 - 4 * (IPC_NEIGHBOUR + IPC_DIAGONAL), IPC_NEIGHBOUR],
                       [IPC_DIAGONAL, IPC_NEIGHBOUR, IPC_DIAGONAL]])
    out = np.zeros_like(stamps)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out += kernel[dy + 1, dx + 1] * np.roll(np.roll(stamps, dy, 1), dx, 2)
    return np.rint(out).astype(np.int32)


def write_cosmic_rays(root: Path, det: Detector, seed: int, libraries=CR_LIBRARIES) -> list[Path]:
    """Ten files of 1000 stamps per library for `det` (int32 electrons, losslessly compressed)."""
    from astropy.io import fits

    out = []
    d = cr_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    for library in libraries:
        rng = rng_for(seed, det, f"cosmic-rays-{library}")
        for i in range(CR_FILES):
            path = d / f"CRs_MCD1.7_{library}_{i:02d}_{cr_suffix(det)}.fits"
            h0 = fits.PrimaryHDU()
            h0.header["LIBRARY"] = library
            h0.header["BUNIT"] = "electron"
            h0.header["COMMENT"] = "synthetic cosmic-ray stamps (dream-hpc refkit), IPC included"
            stamps = fits.CompImageHDU(cosmic_ray_stamps(rng, library), compression_type="RICE_1",
                                       tile_shape=(1, CR_SIZE, CR_SIZE))
            fits.HDUList([h0, stamps]).writeto(path, overwrite=True)
            out.append(path)
    return out


# --- what a simulation asks for --------------------------------------------------------------
def _kit_parameters(root: Path) -> dict | None:
    manifest = root.parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text()).get("parameters")
    except ValueError:
        return None


def _dark_frames(path: Path) -> int:
    from astropy.io import fits

    return int(fits.getheader(path)["NGROUPS"])


def mirage_paths(mirage_data: Path, detector: str, filter: str, readpatt: str,  # noqa: A002 (Mirage's word)
                 ngroups: int | None = None, dark_choice: int = 0) -> dict[str, Path]:
    """The MIRAGE_DATA files one exposure needs, by Mirage yaml key, checked to exist.

    Keys: linearized_darkfile (Reffiles), psfpath (simSignals, a directory), cosmic_ray_path
    (cosmicRay: path, a directory), pixelflat (Reffiles: the QE flat; do not use the CRDS flat
    here). Pair them with psfwfe=PSF_WFE, psfwfegroup=PSF_WFE_GROUP and cosmicRay suffix
    cr_suffix(detector). With `ngroups`, also checks the dark is long enough for the exposure.
    `dark_choice` (e.g. a unit's seed) picks one of the kit's dark realizations (choice modulo count):
    Mirage's docs warn against building a large simulation on a single dark.
    """
    from dream_hpc.refkit import KitError

    root = Path(mirage_data)
    try:
        det = nircam.detector(detector)
        filt = nircam.check_filter(det, filter)
        need = nircam.frames_needed(readpatt, ngroups or 1)
    except InstrumentError as e:
        raise KitError(str(e)) from None
    if not root.is_dir():
        raise KitError(f"{root}: no MIRAGE_DATA directory here; build the kit with `dream-hpc refkit build "
                       "--out DIR` (or `make kit`) and point references.mirage_data at DIR/mirage_data")
    params = _kit_parameters(root)
    rebuild = "rebuild the kit with `dream-hpc refkit build` including"
    if params and readpatt.upper() not in params.get("readpatts", []):
        raise KitError(f"the kit at {root.parent} has no {readpatt.upper()} darks (built for "
                       f"{', '.join(params['readpatts'])}); {rebuild} --readpatt {readpatt.upper()}")
    realization = dark_choice % max(dark_realizations(root, det), 1)
    paths = {"linearized_darkfile": dark_file(root, det, realization), "psfpath": psf_dir(root),
             "cosmic_ray_path": cr_dir(root), "pixelflat": flat_file(root, det, filt)}
    for key, hint in (("linearized_darkfile", f"--detectors {det.name}"), ("pixelflat", f"--filters {filt}")):
        if not paths[key].is_file():
            raise KitError(f"{paths[key]}: missing from the kit ({key} for {det.name} {filt}); {rebuild} {hint}")
    if not psf_file(root, det, filt).is_file():
        raise KitError(f"no {filt} PSF library for {det.name} in {psf_dir(root)}; {rebuild} --filters {filt}")
    if not any(cr_dir(root).glob(f"CRs_MCD1.7_*_{cr_suffix(det)}.fits")):
        raise KitError(f"no cosmic-ray library for {det.name} in {cr_dir(root)}; {rebuild} --detectors {det.name}")
    if ngroups is not None:
        have = _dark_frames(paths["linearized_darkfile"])
        if have < need:
            raise KitError(f"{readpatt.upper()} x {ngroups} groups needs {need} dark frames but the kit's "
                           f"{det.name} dark has {have}; {rebuild} --ngroups-max {ngroups}")
    return paths
