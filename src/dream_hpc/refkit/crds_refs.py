"""CRDS reference files for NIRCam imaging, written as jwst datamodels from the detector model.

Every file is FULL frame (jwst cuts subarrays out itself, Mirage needs full frame too) except
the darks: jwst's dark step subtracts the reference as it is, so there is one per read pattern
and subarray, each cut from the same FULL-frame dark. Files carry the metadata jwst validates and
are written reproducibly (fixed DATE, sorted ASDF history) so the same seed gives the same bytes. File names follow CRDS's own pattern (jwst_nircam_<reftype>_<serial>); what each one is
for is recorded in the rmaps and the kit manifest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dream_hpc.refkit.detector import DetectorModel, dq_flags
from dream_hpc.refkit.nircam import FULL, Detector, Subarray, Zeropoint
from dream_hpc.refkit.photometry import PHOTOM_UNCERTAINTY, abvega_offset, photmjsr

USEAFTER = "2014-01-01T00:00:00"  # before any JWST data: one file per selection, valid for all dates
FIXED_DATE = "2024-01-01T00:00:00.000"  # DATE written into every file (reproducible bytes)
AUTHOR = "dream-hpc refkit"
PEDIGREE = "DUMMY"  # synthetic, not a calibration product
IMAGING_EXPTYPES = "NRC_IMAGE|NRC_TSIMAGE|NRC_FLAT|NRC_LED|NRC_DARK|NRC_FOCUS|NRC_TACQ|NRC_TACONFIRM|"
CLEAR_PUPILS = "CLEAR|F162M|F164N|F323N|F405N|F466N|F470N|FLAT|"


@dataclass
class RefFile:
    """One written reference and the selection (parkey values) it answers."""

    reftype: str
    match: tuple[str, ...]  # values of the rmap's Match parkeys, in order
    path: Path
    describes: dict[str, str] = field(default_factory=dict)  # for the manifest


@contextlib.contextmanager
def reproducible_writes() -> Iterator[None]:
    """Same inputs, same bytes: within this block stdatamodels stamps FIXED_DATE instead of now(),
    and asdf lists the extensions it used in sorted order (it walks a set, whose order changes
    from process to process with Python's string hashing)."""
    from asdf._asdf import AsdfFile
    from astropy.time import Time
    from stdatamodels.jwst.datamodels import model_base

    class _FixedTime(Time):
        @classmethod
        def now(cls):  # type: ignore[override]
            return Time(FIXED_DATE, format="isot", scale="utc")

    update_history = AsdfFile._update_extension_history

    def sorted_history(self, tree, serialization_context):  # type: ignore[no-untyped-def]
        update_history(self, tree, serialization_context)
        extensions = tree.get("history", {}).get("extensions") if isinstance(tree.get("history"), dict) else None
        if extensions:
            extensions.sort(key=lambda e: (str(e.get("extension_uri")), str(e.get("extension_class"))))

    original_time = model_base.Time
    model_base.Time = _FixedTime
    AsdfFile._update_extension_history = sorted_history
    try:
        yield
    finally:
        model_base.Time = original_time
        AsdfFile._update_extension_history = update_history


class Writer:
    """Writes references into one directory with CRDS-style serial names."""

    def __init__(self, refdir: Path):
        self.refdir = refdir
        self.serial: dict[str, int] = {}
        self.written: list[RefFile] = []

    def _name(self, reftype: str, ext: str) -> Path:
        n = self.serial.get(reftype, 0) + 1
        self.serial[reftype] = n
        return self.refdir / f"jwst_nircam_{reftype}_{n:04d}.{ext}"

    def save(self, model, reftype: str, match: tuple[str, ...], ext: str = "fits", **describes: str) -> RefFile:
        path = self._name(reftype, ext)
        model.save(str(path))
        model.close()
        ref = RefFile(reftype=reftype, match=match, path=path, describes=describes)
        self.written.append(ref)
        return ref


def _meta(model, reftype: str, det: Detector | None, description: str, subarray: bool = True) -> None:
    """The header every reference carries (what jwst and CRDS look at)."""
    m = model.meta
    m.reftype = reftype.upper()
    m.author = AUTHOR
    m.pedigree = PEDIGREE
    m.useafter = USEAFTER
    m.description = description
    m.telescope = "JWST"
    m.instrument.name = "NIRCAM"
    if det is not None:
        m.instrument.detector = det.dms
        m.instrument.channel = det.channel
        m.instrument.module = det.module
    if _has(m, "exposure"):
        m.exposure.type = "NRC_IMAGE"
        m.exposure.p_exptype = IMAGING_EXPTYPES
    if subarray and det is not None and _has(m, "subarray"):
        m.subarray.name = "FULL"
        m.subarray.xstart, m.subarray.ystart = 1, 1
        m.subarray.xsize, m.subarray.ysize = FULL, FULL
        m.subarray.fastaxis, m.subarray.slowaxis = det.fastaxis, det.slowaxis


def _has(meta, name: str) -> bool:
    """Whether the model's schema has this metadata group (PixelAreaModel has no subarray, ...)."""
    try:
        getattr(meta, name)
    except AttributeError:
        return False
    return True


def _dq_def(flag_names: list[str]) -> np.ndarray:
    flags = dq_flags()
    rows = [(int(np.log2(flags[n])), flags[n], n, n.replace("_", " ").lower()) for n in flag_names]
    return np.array(rows, dtype=[("BIT", "<i4"), ("VALUE", "<u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")])


def flat_dq(model: DetectorModel) -> np.ndarray:
    """The FLAT's DQ: the reference pixels see no light, so no flat (NO_FLAT_FIELD | DO_NOT_USE). The MASK
    may not say DO_NOT_USE there (refpix would then skip them), so the flat is where Image2 learns it:
    flat_field sets those pixels NaN and DO_NOT_USE (jwst#7015), and skymatch and resample leave them out.
    Without it they reached the mosaic as valid zeros along every exposure's edge, and skymatch's
    overlap medians (whose overlaps hold more edge than the whole image) put false steps of ~10 sigma
    between the demo's exposures."""
    from dream_hpc.refkit.detector import reference_pixels

    flags = dq_flags()
    dq = np.zeros((FULL, FULL), np.uint32)
    dq[reference_pixels()] = flags["REFERENCE_PIXEL"] | flags["NO_FLAT_FIELD"] | flags["DO_NOT_USE"]
    return dq


def write_detector_refs(w: Writer, model: DetectorModel, geometry, zeropoints: dict[str, Zeropoint],
                        readpatts: dict[str, tuple[int, int]], ngroups_max: int, subarrays: list[Subarray],
                        flight_dark_frames: int = 0) -> None:
    """All per-detector references: Detector1's, distortion, area, photom and one flat per filter.

    With `flight_dark_frames` N > 0 the FULL dark is one flight-format RAPID dark of N frames
    (`write_flight_dark`) that every read pattern selects; subarray darks stay readout-matched."""
    from stdatamodels.jwst import datamodels as dm

    det = model.det
    d = det.dms
    tag = f"synthetic {det.name}, dream-hpc refkit seed {model.seed}"
    physics = f"{det.name}, dream-hpc refkit"  # for files the seed does not touch

    mask = dm.MaskModel(dq=model.dq,
                        dq_def=_dq_def(["DO_NOT_USE", "DEAD", "HOT", "WARM", "LOW_QE", "REFERENCE_PIXEL"]))
    _meta(mask, "mask", det, f"bad pixels ({tag})")
    w.save(mask, "mask", (d,), detector=det.name)

    gain = dm.GainModel(data=model.gain)
    _meta(gain, "gain", det, f"gain e-/DN ({tag})")
    gain.meta.bunit_data = "electron/DN"
    w.save(gain, "gain", (d,), detector=det.name)

    rn = dm.ReadnoiseModel(data=model.readnoise)
    _meta(rn, "readnoise", det, f"CDS read noise DN ({tag})")
    rn.meta.bunit_data = "DN"
    w.save(rn, "readnoise", (d,), detector=det.name)

    sb = dm.SuperBiasModel(data=model.superbias)
    _meta(sb, "superbias", det, f"superbias DN ({tag})")
    w.save(sb, "superbias", (d,), detector=det.name)

    sat = dm.SaturationModel(data=model.saturation)
    _meta(sat, "saturation", det, f"saturation, raw DN including bias ({tag})")
    w.save(sat, "saturation", (d,), detector=det.name)

    # dq given: the schema default would be a (4, ny, nx) cube that the linearity step rejects
    lin = dm.LinearityModel(coeffs=model.lin_coeffs, dq=np.zeros((FULL, FULL), np.uint32))
    _meta(lin, "linearity", det, f"linearity correction raw->linear, bias removed ({tag})")
    w.save(lin, "linearity", (d,), detector=det.name)

    # jwst's dark step (unlike the others) does not cut a subarray out of a FULL reference:
    # one dark per read pattern and subarray, cut from the same FULL-frame model.
    if flight_dark_frames and any(sub.name == "FULL" for sub in subarrays):
        write_flight_dark(w, model, flight_dark_frames, sorted(readpatts), tag)
        subarrays = [sub for sub in subarrays if sub.name != "FULL"]
    for readpatt, (nframes, groupgap) in sorted(readpatts.items()):
        full = model.mean_dark_groups(nframes, groupgap, ngroups_max)
        for sub in subarrays:
            dark = dm.DarkModel(data=np.ascontiguousarray(sub.crop(full)))
            _meta(dark, "dark", det, f"dark DN per group, {readpatt} x{ngroups_max}, {sub.name} ({tag})")
            s = dark.meta.subarray
            s.name, s.xstart, s.ystart, s.xsize, s.ysize = sub.name, sub.xstart, sub.ystart, sub.xsize, sub.ysize
            e = dark.meta.exposure
            e.readpatt, e.nframes, e.groupgap, e.ngroups, e.nints = readpatt, nframes, groupgap, ngroups_max, 1
            w.save(dark, "dark", (d, readpatt, sub.name), detector=det.name, readpatt=readpatt, subarray=sub.name)
        del full

    dist = dm.DistortionModel(model=geometry.model, input_units="pixel", output_units="arcsec")
    _meta(dist, "distortion", det, f"pysiaf {geometry.aperture} Sci2Idl/Idl2Sci -> V2/V3 ({physics})",
          subarray=False)
    dist.meta.subarray.name = "FULL"
    dist.meta.instrument.filter = "N/A"
    dist.meta.instrument.pupil = "N/A"
    dist.meta.instrument.p_pupil = CLEAR_PUPILS
    w.save(dist, "distortion", (d,), ext="asdf", detector=det.name)

    area = dm.PixelAreaModel(data=geometry.relative_area)
    _meta(area, "area", det, f"pixel area / nominal, from the distortion ({physics})")
    area.meta.photometry.pixelarea_steradians = geometry.nominal_area_sr
    area.meta.photometry.pixelarea_arcsecsq = geometry.nominal_area_arcsec2
    w.save(area, "area", (d,), detector=det.name)

    phot = dm.NrcImgPhotomModel()
    rows = [(f, "CLEAR", photmjsr(zp, geometry.nominal_area_sr), PHOTOM_UNCERTAINTY * photmjsr(zp, geometry.nominal_area_sr))
            for f, zp in sorted(zeropoints.items())]
    phot.phot_table = np.array(rows, dtype=[("filter", "S12"), ("pupil", "S15"), ("photmjsr", "<f4"),
                                            ("uncertainty", "<f4")])
    _meta(phot, "photom", det, f"MJy/sr per DN/s from Mirage's zeropoints ({physics})", subarray=False)
    phot.meta.photometry.pixelarea_steradians = geometry.nominal_area_sr
    phot.meta.photometry.pixelarea_arcsecsq = geometry.nominal_area_arcsec2
    w.save(phot, "photom", (d,), detector=det.name, filters=",".join(sorted(zeropoints)))

    for filt in sorted(zeropoints):
        flat = dm.FlatModel(data=model.crds_flat(filt), dq=flat_dq(model))
        _meta(flat, "flat", det, f"flat = QE x relative pixel area, {filt} ({tag})")
        flat.meta.instrument.filter = filt
        flat.meta.instrument.pupil = "CLEAR"
        w.save(flat, "flat", (d, filt, "CLEAR"), detector=det.name, filter=filt)


def flight_dark_data(model: DetectorModel, nframes: int) -> np.ndarray:
    """(nframes, ny, nx) float32: the expected dark signal in RAPID frames 1..nframes."""
    data = np.empty((nframes, *model.dark_rate.shape), np.float32)
    for k in range(nframes):
        data[k] = model.mean_dark_frame(k)
    return data


def write_flight_dark(w: Writer, model: DetectorModel, nframes: int, readpatts: list[str], tag: str) -> RefFile:
    """The FULL dark in the flight format: RAPID frames 1..N (NFRAMES=1, GROUPGAP=0), SCI and ERR.

    jwst's dark step averages NFRAMES adjacent frames and skips GROUPGAP to match each exposure
    (stcal dark_sub.average_dark_frames_3d), which gives the readout-matched darks' values (the mean
    of frames k + 1 is the group's mean frame index; both are the expected dark signal, the noise
    lives in Mirage's dark ramps). ERR is the uncertainty of that expected signal, 0; it is written
    (float32, as large as SCI) because flight darks carry it and jwst reads it with the file. One
    file, selected by every read pattern (flight darks are selected by detector and subarray only)."""
    from stdatamodels.jwst import datamodels as dm

    det = model.det
    data = flight_dark_data(model, nframes)
    dark = dm.DarkModel(data=data, err=np.zeros_like(data))
    _meta(dark, "dark", det, f"dark DN per frame, RAPID x{nframes}, FULL ({tag})")
    e = dark.meta.exposure
    e.readpatt, e.nframes, e.groupgap, e.ngroups, e.nints = "RAPID", 1, 0, nframes, 1
    ref = w.save(dark, "dark", (det.dms, readpatts[0], "FULL"), detector=det.name, readpatt="RAPID (flight)",
                 subarray="FULL", frames=str(nframes))
    del data, dark
    for readpatt in readpatts[1:]:
        w.written.append(RefFile(reftype="dark", match=(det.dms, readpatt, "FULL"), path=ref.path,
                                 describes=dict(ref.describes)))
    return ref


def write_catalog_refs(w: Writer, apcorr: dict[str, list[tuple]], zeropoints: dict[str, list[Zeropoint]]) -> None:
    """Image3 source_catalog references: one APCORR and one ABVEGAOFFSET table, a row per filter."""
    from astropy.table import Table
    from stdatamodels.jwst import datamodels as dm

    ap = dm.NrcImgApcorrModel()
    rows = [(f, "CLEAR", *row) for f in sorted(apcorr) for row in apcorr[f]]
    ap.apcorr_table = np.array(rows, dtype=[("filter", "S12"), ("pupil", "S15"), ("eefraction", "<f4"),
                                            ("radius", "<f4"), ("apcorr", "<f4"), ("skyin", "<f4"),
                                            ("skyout", "<f4")])
    _meta(ap, "apcorr", None, "aperture corrections measured on the kit's drizzled synthetic PSFs (radii in "
          "native pixels)", subarray=False)
    w.save(ap, "apcorr", ("NRC_IMAGE",), filters=",".join(sorted(apcorr)))

    ab = dm.ABVegaOffsetModel()
    filters = sorted(zeropoints)
    # per filter, the mean over the kit's detectors (they differ by ~0.002 mag)
    offsets = [float(np.mean([abvega_offset(zp) for zp in zeropoints[f]])) for f in filters]
    ab.abvega_offset = Table({"filter": filters, "pupil": ["CLEAR"] * len(filters),
                              "abvega_offset": np.array(offsets, np.float32)})
    _meta(ab, "abvegaoffset", None, "m_AB - m_Vega from Mirage's zeropoint table", subarray=False)
    w.save(ab, "abvegaoffset", ("NRC_IMAGE",), ext="asdf", filters=",".join(filters))
