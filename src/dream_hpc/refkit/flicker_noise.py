"""1/f ("flicker") noise of NIRCam's SIDECAR readout, for the kit's dark ramps.

The model is Rauscher's NGHXRG (B. J. Rauscher 2015, PASP 127, 1144, "Teledyne H1RG, H2RG, and H4RG
Noise Generator"): each amplifier streams its pixels at 10 us per pixel with 12 extra pixel times
per row (new-row overhead) and one extra row per frame; the noise is a time series in that read
order. Its components used here, with the paper's JWST example amplitudes (e- rms):
- correlated pink noise `C_PINK` = 3 e-, common to all four amplifiers (the SIDECAR's shared
  reference): what makes NIRCam's horizontal stripes run across the whole detector;
- uncorrelated pink noise `U_PINK` = 1 e- per amplifier: the stripes' amplifier-to-amplifier jumps.
White read noise is already in the kit's dark (per frame, from its read-noise map). Amplifiers read
in alternating directions along the fast axis (NIRCam's readout: amps 1 and 3 reverse), so the time
series is mirrored on odd amplifiers. A 1/f series whose lowest frequency is one frame makes stripes
that differ frame to frame: they survive the slope fit, and `clean_flicker_noise` (NSClean-like
row/column fitting; Rauscher 2024, PASP 136, 015001) is what removes them.

Simplification: each frame's series is drawn on its own (power below 1/frame time is white from frame
to frame), which keeps a frame at ~1 M samples per amplifier instead of one FFT over the whole ramp.
"""

from __future__ import annotations

import numpy as np

from dream_hpc.refkit.nircam import AMP_WIDTH, FULL

C_PINK_E = 3.0  # correlated pink noise, e- rms (Rauscher 2015, JWST example)
U_PINK_E = 1.0  # uncorrelated pink noise per amplifier, e- rms
ROW_OVERHEAD = 12  # pixel times at the start of each row (NGHXRG nroh)
FRAME_OVERHEAD_ROWS = 1  # extra rows per frame (NGHXRG nfoh)
N_AMPS = FULL // AMP_WIDTH


def pink_series(rng: np.random.Generator, n: int, rms: float) -> np.ndarray:
    """A 1/f (power ~ 1/f) Gaussian series of `n` samples with standard deviation `rms`."""
    nf = n // 2 + 1
    f = np.arange(nf, dtype=np.float64)
    f[0] = 1.0
    amp = 1.0 / np.sqrt(f)
    amp[0] = 0.0  # no DC: the bias level is the superbias' job
    spec = amp * (rng.standard_normal(nf) + 1j * rng.standard_normal(nf))
    series = np.fft.irfft(spec, n)
    std = series.std()
    return series * (rms / std) if std > 0 else series


def frame_noise(rng: np.random.Generator, gain: float, c_pink_e: float = C_PINK_E,
                u_pink_e: float = U_PINK_E) -> np.ndarray:
    """One full frame (FULL, FULL) of correlated + uncorrelated 1/f noise in DN, laid out in read order."""
    row_len = AMP_WIDTH + ROW_OVERHEAD
    n = row_len * (FULL + FRAME_OVERHEAD_ROWS)
    common = pink_series(rng, n, c_pink_e) if c_pink_e > 0 else np.zeros(n)
    out = np.empty((FULL, FULL), np.float32)
    for a in range(N_AMPS):
        series = common + (pink_series(rng, n, u_pink_e) if u_pink_e > 0 else 0.0)
        block = series.reshape(FULL + FRAME_OVERHEAD_ROWS, row_len)[FRAME_OVERHEAD_ROWS:, ROW_OVERHEAD:]
        if a % 2:
            block = block[:, ::-1]  # this amplifier reads right to left
        out[:, a * AMP_WIDTH:(a + 1) * AMP_WIDTH] = block / gain
    return out
