"""The synthetic detector model both halves of the kit are cut from.

One `DetectorModel` per detector, drawn deterministically from (seed, detector, component):
gain, read noise, superbias with structure, per-frame reference-pixel drift, non-linearity,
saturation, dark current with hot pixels, bad pixels, quantum-efficiency structure and pixel areas.
The CRDS references (what jwst removes) and the MIRAGE_DATA files (what Mirage adds) are both
written from it, so a simulated exposure calibrates back to its input.

Units: DN (= ADU) for signals, DN/s for rates, e-/DN for gain; arrays are FULL frame, science
(DMS) orientation, float32, and the 4-pixel border is reference pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from dream_hpc.refkit.nircam import AMP_WIDTH, FULL, FULL_FRAME_TIME, REF_BORDER, Detector

# Detector-level numbers (short wave, long wave). Gains are Mirage's own mean gains (it uses the
# mean, not a gain map, for Poisson noise), so noise in simulation and calibration agree.
BIAS_LEVEL = {"SHORT": 12500.0, "LONG": 11000.0}  # DN
READNOISE_CDS = {"SHORT": 12.0, "LONG": 10.0}  # DN, correlated double sample (jwst's convention)
DARK_RATE = {"SHORT": 0.001, "LONG": 0.008}  # DN/s, typical pixel
FULL_WELL = 42000.0  # DN above bias where a pixel saturates (raw, non-linear DN)
LINEARITY = (9.7e-7, 3.85e-11)  # c2, c3 of the raw->linear correction (Mirage's CV3 mean terms)
REFPIX_DRIFT = 2.0  # DN rms per frame per amplifier, seen by reference and science pixels alike
HOT_FRACTION, DEAD_FRACTION, LOW_QE_FRACTION = 0.005, 0.003, 0.012  # ~2% flagged in all
HOT_LIMIT = 5.0  # DN/s above which a hot pixel is also DO_NOT_USE (below: WARM)


def rng_for(seed: int, det: Detector, component: str) -> np.random.Generator:
    """An independent, stable random stream per (seed, detector, component)."""
    return np.random.default_rng([seed, zlib.crc32(det.name.encode()), zlib.crc32(component.encode())])


def amplifier_index() -> np.ndarray:
    """Amplifier (0-3) reading each science column."""
    return np.arange(FULL) // AMP_WIDTH


def reference_pixels() -> np.ndarray:
    """Boolean map of the reference-pixel border."""
    ref = np.ones((FULL, FULL), bool)
    ref[REF_BORDER:-REF_BORDER, REF_BORDER:-REF_BORDER] = False
    return ref


def _smooth_field(rng: np.random.Generator, amplitude: float, modes: int = 4) -> np.ndarray:
    """A smooth, zero-mean 2D pattern of low-order cosine modes with rms ~ amplitude."""
    t = (np.arange(FULL) + 0.5) / FULL
    field_ = np.zeros((FULL, FULL))
    for _ in range(modes):
        kx, ky = rng.integers(0, 4, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        field_ += np.outer(np.cos(np.pi * ky * t + py), np.cos(np.pi * kx * t + px)) * rng.normal()
    std = field_.std()
    return field_ * (amplitude / std) if std > 0 else field_


def dq_flags() -> dict[str, int]:
    from stdatamodels.jwst.datamodels import dqflags

    return dqflags.pixel


@dataclass
class DetectorModel:
    det: Detector
    seed: int
    gain: np.ndarray
    readnoise: np.ndarray  # CDS, DN
    superbias: np.ndarray  # DN
    lin_coeffs: np.ndarray  # (4, ny, nx): linear = sum c_k raw^k, raw with bias removed
    saturation: np.ndarray  # raw DN (bias included)
    dark_rate: np.ndarray  # DN/s
    dq: np.ndarray  # uint32 bad-pixel flags (jwst dqflags)
    qe_base: np.ndarray  # relative quantum efficiency, all filters
    relative_area: np.ndarray  # pixel area / nominal pixel area
    mean_gain: float
    _qe: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    # --- flats ---------------------------------------------------------------------------
    def qe(self, filt: str) -> np.ndarray:
        """Relative QE in `filt`: what Mirage multiplies its ramps by (its `pixelflat`)."""
        if filt not in self._qe:
            rng = rng_for(self.seed, self.det, f"qe-{filt}")
            qe = self.qe_base * (1.0 + _smooth_field(rng, 0.003, modes=3)).astype(np.float32)
            qe[reference_pixels()] = 1.0
            self._qe[filt] = qe.astype(np.float32)
        return self._qe[filt]

    def crds_flat(self, filt: str) -> np.ndarray:
        """The FLAT reference: QE times relative pixel area, as a flat made on a uniformly bright sky.

        Mirage puts a point source's counts on the detector without any pixel-area factor and
        multiplies by QE only; dividing by QE x area and drizzling with the true pixel areas then
        returns exactly the source's flux, while a uniform sky calibrates flat.
        """
        return (self.qe(filt) * self.relative_area).astype(np.float32)

    # --- dark current --------------------------------------------------------------------
    def mean_dark_frame(self, k: int) -> np.ndarray:
        """Expected dark signal (DN) in RAPID frame k (0-based) of a FULL-frame ramp."""
        return (self.dark_rate * (FULL_FRAME_TIME * (k + 1))).astype(np.float32)

    def mean_dark_groups(self, nframes: int, groupgap: int, ngroups: int) -> np.ndarray:
        """Expected dark signal per group for a read pattern: the mean of each group's frames,
        exactly how Mirage averages its RAPID dark into groups."""
        per_group = nframes + groupgap
        frame_index = np.array([g * per_group + (nframes + 1) / 2.0 for g in range(ngroups)])
        return (self.dark_rate[None] * (FULL_FRAME_TIME * frame_index)[:, None, None]).astype(np.float32)

    def dark_ramp(self, nframes: int, realization: int = 0,
                  flicker: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One realization of a RAPID dark: (signal, superbias + reference-pixel signal).

        signal: (1, nframes, ny, nx) float32 linear DN (dark current with shot noise on hot
        pixels, read noise per frame = CDS noise / sqrt(2), and with `flicker` the readout's 1/f
        noise, refkit/flicker_noise.py); bias: same shape, uint16 DN (superbias plus a per-frame,
        per-amplifier drift that refpix must remove). Realizations are independent draws.
        """
        from dream_hpc.refkit.flicker_noise import frame_noise

        rng = rng_for(self.seed, self.det, f"dark-ramp-{nframes}" + (f"-r{realization}" if realization else ""))
        flicker_rng = rng_for(self.seed, self.det, f"dark-flicker-{nframes}-r{realization}")
        sigma_frame = (self.readnoise / np.sqrt(2.0)).astype(np.float32)
        signal = np.empty((1, nframes, FULL, FULL), np.float32)
        bias = np.empty((1, nframes, FULL, FULL), np.uint16)
        hot = self.dark_rate > 0.1  # shot noise matters only there
        electrons = np.zeros(int(hot.sum()))
        per_frame_e = self.dark_rate[hot] * FULL_FRAME_TIME * self.gain[hot]
        amp = amplifier_index()
        for k in range(nframes):
            frame = self.mean_dark_frame(k)
            electrons += rng.poisson(per_frame_e)
            frame[hot] = electrons / self.gain[hot]
            frame += sigma_frame * rng.standard_normal((FULL, FULL), dtype=np.float32)
            if flicker:
                # 1/f noise is read-out noise: the reference pixels see it too (refpix removes
                # only their row-averaged part, which is why stripes survive into rate images)
                frame += frame_noise(flicker_rng, self.mean_gain)
            signal[0, k] = frame
            drift = rng.normal(0.0, REFPIX_DRIFT, 4)[amp]
            bias[0, k] = np.clip(np.rint(self.superbias + drift[None, :]), 0, 65535)
        return signal, bias

    # --- non-linearity -------------------------------------------------------------------
    def linearize(self, raw: np.ndarray) -> np.ndarray:
        """jwst's correction: linear = sum_k c_k raw^k (raw with bias removed), per pixel."""
        out = np.zeros_like(raw, dtype=np.float64)
        for c in self.lin_coeffs[::-1]:
            out = out * raw + c
        return out

    def unlinearize(self, linear: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Inverse of `linearize` (Newton), what Mirage's unlinearize does with the same coefficients."""
        raw = np.array(linear, dtype=np.float64)
        deriv = [k * c for k, c in enumerate(self.lin_coeffs)][1:]
        for _ in range(iterations):
            f = self.linearize(raw) - linear
            d = np.zeros_like(raw)
            for c in deriv[::-1]:
                d = d * raw + c
            raw -= f / d
        return raw


def make_detector(det: Detector, seed: int, relative_area: np.ndarray) -> DetectorModel:
    """Draw the detector model for `det` from `seed` (same inputs, same arrays, bit for bit)."""
    from mirage.utils.constants import MEAN_GAIN_VALUES  # plain constants module, no side effects

    ch = det.channel
    ref = reference_pixels()
    science = ~ref
    flags = dq_flags()
    shape = (FULL, FULL)
    yy, xx = np.meshgrid(np.linspace(-1, 1, FULL), np.linspace(-1, 1, FULL), indexing="ij")

    mean_gain = float(MEAN_GAIN_VALUES["nircam"][det.name.lower()])
    r = rng_for(seed, det, "gain")
    gain = mean_gain * (1.0 + 0.015 * r.standard_normal(shape))

    r = rng_for(seed, det, "readnoise")
    readnoise = READNOISE_CDS[ch] * np.exp(0.08 * r.standard_normal(shape))

    # superbias: level + per-amplifier offsets + column/row patterns + even/odd columns + gradient
    r = rng_for(seed, det, "superbias")
    amp = amplifier_index()
    superbias = (BIAS_LEVEL[ch] + r.normal(0, 250, 4)[amp][None, :]
                 + r.normal(0, 12, FULL)[None, :] + r.normal(0, 4, FULL)[:, None]
                 + 6.0 * (np.arange(FULL) % 2)[None, :]
                 + 80 * xx + 50 * yy + 60 * (xx**2 + yy**2)
                 + r.normal(0, 20, shape))

    r = rng_for(seed, det, "linearity")
    lin = np.zeros((4, *shape))
    lin[1] = 1.0
    lin[2] = LINEARITY[0] * (1.0 + 0.03 * r.standard_normal(shape))
    lin[3] = LINEARITY[1] * (1.0 + 0.03 * r.standard_normal(shape))
    lin[2:, ref] = 0.0  # reference pixels see no light: identity

    r = rng_for(seed, det, "saturation")
    saturation = np.minimum(superbias + FULL_WELL * (1.0 + 0.02 * r.standard_normal(shape)), 65000.0)
    saturation[ref] = 65535.0

    # dark current: a typical rate with scatter, plus hot and warm pixels
    r = rng_for(seed, det, "dark")
    dark = DARK_RATE[ch] * np.clip(1.0 + 0.3 * r.standard_normal(shape), 0.0, None)
    hot = science & (r.random(shape) < HOT_FRACTION)
    dark[hot] = 10 ** r.uniform(np.log10(0.5), np.log10(50.0), int(hot.sum()))
    dark[ref] = 0.0

    # quantum efficiency: smooth structure ~1%, pixel scatter ~1%, dead and low-QE pixels
    r = rng_for(seed, det, "qe")
    qe = 1.0 + _smooth_field(r, 0.01) + 0.01 * r.standard_normal(shape)
    pick = r.random(shape)
    dead = science & (pick < DEAD_FRACTION)
    low = science & (pick >= DEAD_FRACTION) & (pick < DEAD_FRACTION + LOW_QE_FRACTION)
    qe[dead] = 0.02
    qe[low] *= r.uniform(0.4, 0.8, int(low.sum()))
    qe /= np.median(qe[science])
    qe[ref] = 1.0

    dq = np.zeros(shape, np.uint32)
    dq[ref] = flags["REFERENCE_PIXEL"]  # only that: DO_NOT_USE here would disable refpix
    very_hot = hot & (dark > HOT_LIMIT)
    dq[very_hot] |= flags["HOT"] | flags["DO_NOT_USE"]
    dq[hot & ~very_hot] |= flags["WARM"]
    dq[dead] |= flags["DEAD"] | flags["DO_NOT_USE"]
    dq[low] |= flags["LOW_QE"]

    f32 = np.float32
    return DetectorModel(det=det, seed=seed, gain=gain.astype(f32), readnoise=readnoise.astype(f32),
                         superbias=superbias.astype(f32), lin_coeffs=lin.astype(f32),
                         saturation=saturation.astype(f32), dark_rate=dark.astype(f32), dq=dq,
                         qe_base=qe.astype(f32), relative_area=relative_area.astype(f32), mean_gain=mean_gain)
