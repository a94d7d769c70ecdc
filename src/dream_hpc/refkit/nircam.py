"""NIRCam facts the kit is built from: detector names and axes, read patterns, zeropoints, PSF widths.

Everything instrument-specific that is not a synthetic choice lives here, read from the installed
packages (pysiaf's SIAF, Mirage's zeropoint table), so the kit agrees with what Mirage and jwst
themselves assume.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from dream_hpc.config import LW_DETECTORS, LW_FILTERS, READ_PATTERNS, SUBARRAYS, SW_DETECTORS, SW_FILTERS

FULL = 2048  # detector size in pixels (FULL frame)
REF_BORDER = 4  # reference pixels along every edge
AMP_WIDTH = 512  # columns read by each of the 4 amplifiers (science frame)
FULL_FRAME_TIME = 10.73677  # s, FULL frame, 4 amplifiers (Mirage's value for dark ramps)
TELESCOPE_DIAMETER_M = 6.5
NOMINAL_SCALE = {"SHORT": 0.031, "LONG": 0.063}  # arcsec/pixel, one PSF per channel and filter
# Filters that sit in the pupil wheel (imaged with a wide filter in the filter wheel): not built yet.
PUPIL_WHEEL_FILTERS = ("F162M", "F164N", "F323N", "F405N", "F466N", "F470N")


class InstrumentError(ValueError):
    """A detector, filter or read pattern the kit cannot build; one line naming the fix."""


@dataclass(frozen=True)
class Detector:
    """One NIRCam detector under its three names."""

    name: str  # NRCB1 ... NRCB5 (SIAF / Mirage / config name)
    dms: str  # DETECTOR keyword in DMS files: NRCB1 ... NRCBLONG
    channel: str  # SHORT | LONG
    module: str  # A | B
    fastaxis: int  # DMS FASTAXIS / SLOWAXIS (science frame)
    slowaxis: int

    @property
    def short_wave(self) -> bool:
        return self.channel == "SHORT"

    @property
    def mirage_suffix(self) -> str:
        """Mirage's per-detector file suffix, e.g. B1, B5."""
        return self.name[3:]


def detector(name: str) -> Detector:
    """A Detector from NRCB1/NRCB5/NRCBLONG style names (case-insensitive)."""
    key = name.strip().upper().replace("LONG", "5")
    if key not in SW_DETECTORS + LW_DETECTORS:
        raise InstrumentError(f"unknown NIRCam detector {name!r} "
                              f"(choose from {', '.join(SW_DETECTORS + LW_DETECTORS)})")
    long_wave = key in LW_DETECTORS
    fast, slow = _axes(key)
    return Detector(name=key, dms=key[:4] + "LONG" if long_wave else key, channel="LONG" if long_wave else "SHORT",
                    module=key[3], fastaxis=fast, slowaxis=slow)


def _axes(name: str) -> tuple[int, int]:
    """FASTAXIS/SLOWAXIS of the science frame, from the SIAF's detector-to-science rotation."""
    ap = siaf()[f"{name}_FULL"]
    # Science x runs along detector x (the fast read direction) with DetSciParity -1 applied:
    # DetSciYAngle 0 flips x, 180 flips y.
    return (1, -2) if round(ap.DetSciYAngle) == 180 else (-1, 2)


def check_filter(det: Detector, filt: str) -> str:
    """Validate that `filt` is a NIRCam filter the kit can build for `det`; returns it upper-case."""
    f = filt.strip().upper()
    if f in PUPIL_WHEEL_FILTERS:
        raise InstrumentError(f"filter {f} sits in the pupil wheel; the kit builds filter-wheel filters only "
                              f"(with PUPIL=CLEAR)")
    if f not in SW_FILTERS + LW_FILTERS:
        raise InstrumentError(f"unknown NIRCam filter {filt!r} (short wave: {', '.join(SW_FILTERS)}; "
                              f"long wave: {', '.join(LW_FILTERS)})")
    if (f in SW_FILTERS) != det.short_wave:
        wave = "short" if f in SW_FILTERS else "long"
        raise InstrumentError(f"filter {f} is a {wave}-wave filter but {det.name} is a "
                              f"{'short' if det.short_wave else 'long'}-wave detector")
    return f


def read_pattern(name: str) -> tuple[int, int]:
    """(nframes, groupgap) of a NIRCam read pattern."""
    key = name.strip().upper()
    if key not in READ_PATTERNS:
        raise InstrumentError(f"unknown NIRCam read pattern {name!r} (choose from {', '.join(READ_PATTERNS)})")
    return READ_PATTERNS[key]


def frames_needed(readpatt: str, ngroups: int) -> int:
    """RAPID frames Mirage averages/skips to make `ngroups` groups of `readpatt`."""
    nframes, groupgap = read_pattern(readpatt)
    return ngroups * (nframes + groupgap)


@dataclass(frozen=True)
class Subarray:
    """A readout region in FULL-frame science coordinates, as jwst's SUBSTRT/SUBSIZE keywords."""

    name: str
    xstart: int  # 1-based
    ystart: int
    xsize: int
    ysize: int

    def crop(self, array):  # (..., 2048, 2048) -> (..., ysize, xsize)
        return array[..., self.ystart - 1:self.ystart - 1 + self.ysize, self.xstart - 1:self.xstart - 1 + self.xsize]


def subarray(det: Detector, name: str) -> Subarray:
    """Where subarray `name` of `det` sits, from the SIAF (the corners Mirage itself crops with)."""
    key = name.strip().upper()
    if key not in SUBARRAYS:
        raise InstrumentError(f"unknown subarray {name!r} (choose from {', '.join(SUBARRAYS)})")
    if key == "FULL":
        return Subarray("FULL", 1, 1, FULL, FULL)
    s = siaf()
    aperture = f"{det.name}_{key}"
    if aperture not in s.apernames:
        raise InstrumentError(f"{det.name} has no {key} subarray (no SIAF aperture {aperture})")
    ap = s[aperture]
    x_det, y_det = ap.corners("det", rederive=True)
    x_sci, y_sci = s[f"{det.name}_FULL"].det_to_sci(x_det, y_det)
    return Subarray(key, math.ceil(min(x_sci)), math.ceil(min(y_sci)), int(ap.XSciSize), int(ap.YSciSize))


def siaf():  # -> pysiaf.Siaf
    """pysiaf's NIRCam SIAF (ships with pysiaf), imported with the network blocked."""
    from dream_hpc.plan.footprint import nircam_siaf

    return nircam_siaf()


# --- photometric zeropoints (Mirage's own table) -----------------------------------------------
@dataclass(frozen=True)
class Zeropoint:
    """One row of Mirage's NIRCam_zeropoints.list: magnitudes giving 1 ADU/s, and PHOTFNU."""

    filter: str
    pupil: str
    detector: str
    vegamag: float
    abmag: float
    photfnu: float  # erg/s/cm^2/Hz per ADU/s
    pivot_um: float


def zeropoint_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mirage")
    if spec is None or not spec.submodule_search_locations:
        raise InstrumentError("Mirage is not installed in this environment (install from requirements.lock)")
    return Path(next(iter(spec.submodule_search_locations))) / "config" / "NIRCam_zeropoints.list"


@functools.cache
def _zeropoint_rows() -> tuple[Zeropoint, ...]:
    rows = []
    lines = zeropoint_file().read_text().splitlines()
    header = lines[0].split()
    for line in lines[1:]:
        parts = line.split()
        if len(parts) != len(header):
            continue
        r = dict(zip(header, parts, strict=True))
        rows.append(Zeropoint(filter=r["Filter"], pupil=r["Pupil"], detector=r["Detector"],
                              vegamag=float(r["VEGAMAG"]), abmag=float(r["ABMAG"]),
                              photfnu=float(r["PHOTFNU"]), pivot_um=float(r["Pivot_wave"])))
    return tuple(rows)


def zeropoint(det: Detector, filt: str, pupil: str = "CLEAR") -> Zeropoint:
    """Mirage's zeropoint row for (filter, pupil, detector): the count rate Mirage gives a magnitude."""
    for row in _zeropoint_rows():
        if row.filter == filt and row.pupil == pupil and row.detector == det.name:
            return row
    raise InstrumentError(f"no row for {filt}/{pupil}/{det.name} in Mirage's {zeropoint_file().name}")


def psf_fwhm_arcsec(zp: Zeropoint) -> float:
    """Synthetic PSF FWHM: diffraction (1.03 lambda/D at the pivot) plus 18 mas in quadrature.

    Gives 0.052" at F150W and 0.092" at F277W, close to the measured NIRCam values.
    """
    diffraction = 1.03 * zp.pivot_um * 1e-6 / TELESCOPE_DIAMETER_M * 180 / math.pi * 3600
    return math.hypot(diffraction, 0.018)
