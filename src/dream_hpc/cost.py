"""Cost model: CPU seconds and peak memory per unit and stage, and per Image3 mosaic.

Linear in what each stage touches. Simulate was measured here (Mirage 2.5.0 through
`dream_hpc.simulate`, kit darks of 40 frames, CPU seconds excluding imports, peak RSS of the process):
  SUB400P MEDIUM8 x4: 4.4-5.5 s, 1.97 GB;  SUB400P MEDIUM8 x2: 5.0 s, 1.97 GB;
  FULL MEDIUM8 x2 (LW, 2278 galaxies): 28.9 s, 3.0 GB;  FULL MEDIUM8 x4 (SW, 468 galaxies): 29.6 s, 4.2 GB.
Mirage's CPU grows with pixels x groups and with the number of galaxies (Sersic stamps), hardly with
frames; its memory is the imports plus the FULL-frame float64 linearized dark it reads whatever the
subarray (8 bytes x 2048^2 per dark frame) plus ~17 float64 copies of the group ramp.
The other stages come from /work/shared/notes/offline-references.md (2 cores, jwst 3.0.0):
- detector1 on NRCB1 FULL, MEDIUM8 x9 with a readout-matched dark: 16-19 s wall (user+sys ~19 s),
  2.5 GiB peak set by jump (~16x the ramp); a 130-frame dark doubled the peak (5.2 GiB).
- image2 on FULL: 8-10 s (user+sys ~10 s), 1.09 GiB.
- image3: ~7 s + ~10 s and ~135 MiB per full-frame input (2 inputs 27 s / 1.32 GiB, 4 inputs
  47 s / 1.6 GiB); resample also holds the output mosaic (~20 bytes per output pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dream_hpc.config import READ_PATTERNS
from dream_hpc.workunit import WorkUnit

GiB = 1024.0  # MB per GiB
FULL_PIXELS = 2048 * 2048

# (cpu seconds, MB) = fixed + per-item; items are named beside each constant
SIM_FIXED_S, SIM_PER_PIXGROUP_S = 3.0, 1.5e-6  # pixel-groups = pixels x ngroups x nints
SIM_PER_GALAXY_S, GALAXIES_PER_ARCMIN2 = 0.006, 350.0  # Sersic stamps; DREaM-like density to AB ~28.5
SIM_FIXED_MB, SIM_PER_DARKFRAME_MB = 550.0, 33.5  # imports + one FULL float64 dark frame per frame read
SIM_PER_PIXGROUP_MB = 1.4e-4  # ~17 float64 copies of the group ramp
DET1_FIXED_S, DET1_PER_PIXGROUP_S = 4.0, 3.9e-7  # pixel-groups = pixels x ngroups x nints
DET1_FIXED_MB, DET1_PER_PIXGROUP_MB = 260.0, 6.8e-5  # jump: ~17x the float32 ramp
IMG2_FIXED_S, IMG2_PER_PIX_S = 3.5, 1.55e-6
IMG2_FIXED_MB, IMG2_PER_PIX_MB = 260.0, 2.0e-4  # ~200 bytes per pixel
IMG3_FIXED_S, IMG3_PER_INPUT_PIX_S = 7.0, 2.4e-6  # ~10 s per full-frame input
IMG3_FIXED_MB, IMG3_PER_INPUT_PIX_MB = 1050.0, 3.4e-5  # ~135 MiB per full-frame input
IMG3_PER_OUTPUT_PIX_MB = 2.0e-5  # sci, err, wht, con, var planes of the drizzled mosaic
PIXEL_SCALE = {"SHORT": 0.031, "LONG": 0.063}  # arcsec, native (Image3 default output scale)


@dataclass
class StageCost:
    cpu_s: float
    mem_mb: float


def frames_simulated(readpatt: str, ngroups: int, nints: int) -> int:
    nframes, groupgap = READ_PATTERNS[readpatt]
    return nints * (ngroups * (nframes + groupgap))


def unit_pixels(unit: WorkUnit) -> int:
    from dream_hpc import footprint

    ap = footprint.aperture(footprint.aperture_name(unit.detector, unit.subarray))
    return int(ap.XSciSize) * int(ap.YSciSize)


def unit_costs(unit: WorkUnit, pixels: int | None = None) -> dict[str, StageCost]:
    """Estimated CPU seconds and peak MB of simulate, detector1 and image2 for one unit."""
    npix = pixels if pixels is not None else unit_pixels(unit)
    pixgroups = npix * unit.ngroups * unit.nints
    area_arcmin2 = npix * PIXEL_SCALE[unit.channel] ** 2 / 3600.0
    dark_frames = frames_simulated(unit.readpatt, unit.ngroups, 1)  # the kit's dark holds at least these
    return {
        "simulate": StageCost(SIM_FIXED_S + SIM_PER_PIXGROUP_S * pixgroups
                              + SIM_PER_GALAXY_S * GALAXIES_PER_ARCMIN2 * area_arcmin2,
                              SIM_FIXED_MB + SIM_PER_DARKFRAME_MB * dark_frames + SIM_PER_PIXGROUP_MB * pixgroups),
        "detector1": StageCost(DET1_FIXED_S + DET1_PER_PIXGROUP_S * pixgroups,
                               DET1_FIXED_MB + DET1_PER_PIXGROUP_MB * pixgroups),
        "image2": StageCost(IMG2_FIXED_S + IMG2_PER_PIX_S * npix, IMG2_FIXED_MB + IMG2_PER_PIX_MB * npix),
    }


def annotate(units: list[WorkUnit]) -> None:
    """Set est_cpu_s (sum of the stages) and est_mem_mb (the heaviest stage) on each unit."""
    pixels: dict[tuple[str, str], int] = {}
    for u in units:
        key = (u.detector, u.subarray)
        if key not in pixels:
            pixels[key] = unit_pixels(u)
        costs = unit_costs(u, pixels[key])
        u.est_cpu_s = round(sum(c.cpu_s for c in costs.values()), 1)
        u.est_mem_mb = round(max(c.mem_mb for c in costs.values()), 0)


def image3_cost(n_inputs: int, input_pixels: int, output_pixels: float) -> StageCost:
    """One Image3 over `n_inputs` cal files totalling `input_pixels`, drizzled onto `output_pixels`."""
    return StageCost(IMG3_FIXED_S + IMG3_PER_INPUT_PIX_S * input_pixels,
                     IMG3_FIXED_MB + IMG3_PER_INPUT_PIX_MB * input_pixels + IMG3_PER_OUTPUT_PIX_MB * output_pixels)


def ranks_per_node(peak_unit_mb: float, node_mem_gb: float, node_cores: int, reserve: float = 0.15) -> int:
    """How many single-threaded ranks fit on a node: cores, or memory (keeping `reserve` for the OS)."""
    by_memory = math.floor(node_mem_gb * GiB * (1.0 - reserve) / max(peak_unit_mb, 1.0))
    return max(0, min(node_cores, by_memory))
