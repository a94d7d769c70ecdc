"""Cost model: CPU seconds and peak memory per unit and stage, and per Image3 mosaic.

Linear in what each stage touches. Simulate was measured here (Mirage 2.5.0 through
`dream_hpc.stages.simulate`, kit darks of 40 frames, CPU seconds excluding imports, peak RSS of the process):
  SUB400P MEDIUM8 x4: 4.4-5.5 s, 1.97 GB;  SUB400P MEDIUM8 x2: 5.0 s, 1.97 GB;
  FULL MEDIUM8 x2 (LW, 2278 galaxies): 28.9 s, 3.0 GB;  FULL MEDIUM8 x4 (SW, 468 galaxies): 29.6 s, 4.2 GB.
Mirage's CPU grows with pixels x groups and with the number of galaxies (Sersic stamps), hardly with
frames; its memory is the imports plus the FULL-frame float64 linearized dark it reads whatever the
subarray (8 bytes x 2048^2 per dark frame) plus ~17 float64 copies of the group ramp.
The other stages come from /work/shared/notes/offline-references.md (2 cores, jwst 3.0.0):
- detector1 on NRCB1 FULL, MEDIUM8 x9 with a readout-matched dark: 16-19 s wall (user+sys ~19 s),
  2.5 GiB peak set by jump (~16x the ramp); a 130-frame dark doubled the peak (5.2 GiB).
- image2 on FULL: 8-10 s (user+sys ~10 s), 1.09 GiB.
- image3: the IMG3_* constants, fitted to the runs listed beside them.
Refitted after the worker and chain speed-ups (long-lived worker with jwst/Mirage imported once, heap
frozen before each pipeline, dark_prep reused per readout), from the journals of `dream-hpc run`
(CPU s and peak RSS per stage; the worker's ~450 MB of imports are inside every peak), MEDIUM8 x4:
  SUB400P (demo, 24 units; 4x4x3 grid, 48; 8x8x2 grid, 128): simulate 1.4-1.75 s (first unit of a
  readout ~7 s: it prepares the dark), 0.6-1.0 GB (first unit 2.3-2.5 GB); detector1 0.84-0.99 s,
  0.5-1.3 GB; image2 0.31-0.35 s, 0.45-1.3 GB (the worker grows slowly over 100+ units).
  FULL (6 units, wall under load 3-6): simulate 32 s (SW) / 68 s (LW); detector1 6.9-10.7 s;
  image2 1.1-1.5 s.

Image3 (jwst 3.0.0 through `dream_hpc.stages.image3.run_mosaic`, measured with bench/bench_image3_cost.py on
2 shared cores: CPU seconds of the stage with jwst imported, peak RSS of the process; one detector per
filter, so every input is its own exposure group; per-step CPU s tweakreg/skymatch/outlier/resample/
source_catalog where measured):
  demo (config/demo.yaml, SUB400P, 600 stars/arcmin^2, 2x2 tiles x 3 dithers), N inputs -> CPU s, MB:
    F150W (~20 sources found per input):  N=1 2.3 s 351;  4: 5.9 s 369;  8: 11.6 s 464;  12: 21.5 s 472
    F277W (~90 sources per input):        N=1 2.5 s 356;  4: 7.7 s 371;  8: 19.7 s 422;  12: 42.5 s 435
  FULL, 100 stars/arcmin^2, 2 tiles x 3 dithers, jwst's default tweakreg parameters:
    F150W N=1 12.7 s 1099;  N=3 40.4 s 1448;  N=6 78.5 s 2013 (17.5/3.0/29.6/21.9/2.6)
    F277W N=2 29.9 s 1327;  N=6 86.1 s 1939 (18.7/3.3/33.3/23.7/3.8)
  SUB400P F150W grids (600 stars/arcmin^2): 4x4 tiles x 3 dithers, N=12/24/48: 21.8/74.2/234.4 s,
    476/662/1273 MB (N=48: 178.8/22.4/21.0/7.6/1.4); 8x8 tiles x 2 dithers, N=64/128: 127.8/367.5 s,
    2347/6326 MB (N=128: 146.8/61.1/112.9/34.8/5.3).
What grows how (read in tweakwcs 0.9.3, stcal, jwst 3.0 and confirmed by those numbers):
- tweakreg and skymatch test the sky footprints of every pair of inputs for overlap (spherical_geometry:
  ~0.1 s per overlapping pair, ~5 ms per disjoint one; the runs made ~2 N^2 such tests). Up to 50
  images tweakreg also unions all footprints exactly for the absolute fit (~O(N^2), 48 inputs took
  longer than 64); above 50 it takes a convex hull. The model keeps that term at its 50-input value,
  so the cost never drops with more inputs.
- outlier_detection drizzles every exposure group onto the whole mosaic frame and takes the median of
  the (groups, ny, nx) float32 stack, held in memory (Image3's default): CPU and 4 bytes per group
  and mosaic pixel. The 8x8 grid's outlier step fits 1.0e-6 s per input pixel + 8.3e-8 s per layer pixel.
- resample, source finding and source_catalog go with the input and mosaic pixels.
- Source density: at the same inputs the demo's F277W (4x the sources found) cost up to 2x F150W.
- Sources per input (tweakreg's catalogs, at most its `brightest`): every footprint test that overlaps
  intersects the polygons tweakreg builds around source catalogs (the expanded reference catalog's and
  the groups' convex hulls), so its cost grows with the sources: measured with the polygon tally of
  bench/bench_image3_cost.py on tests/data/small_survey.yaml (SUB400P, 12 inputs per filter, all 66 pairs
  overlapping, expand_refcat, jwst's abs_refcat fit), polygon CPU per overlapping pair at N = 4/8/12:
  SW (~22 sources per input) 0.13/0.16/0.23 s, LW (~91) 0.22/0.31/0.41 s, and FULL SW capped at 600
  (config/demo.yaml) 0.40 s at N = 4: per pair ~ sources^(1/3) (22 -> 91: 1.6-1.9x, 22 -> 600: 3.0x;
  1/3 is how the vertex count of a convex hull of n scattered points grows, Renyi-Sulanke). The constants
  above were fitted on ~22-source inputs; IMG3_OVERLAP_PAIR_S x ((s / IMG3_REF_SOURCES)^(1/3) - 1) per
  overlapping pair adds what more sources cost (0.215 s: the SW runs' polygon CPU per overlapping pair).
  Which is why the long-wave Image3 of that survey costs 41.3 CPU-s against 28.0 for the short-wave
  one with the same pixels (the 4.1x sky area of an LW pixel holds 4x the sources), while on FULL frames
  both filters are capped at `brightest` and cost the same (config/demo.yaml: 57.9 vs 58.6 CPU-s at N=4).
  Sources per input = min(brightest, IMG3_SOURCES_PER_ARCMIN2 x the input's sky area).
All points lie within IMG3_FIT_TOLERANCE of the model (the worst: demo F277W N=12 at 1.7x, 64
inputs on the 8x8 grid at 0.56x, just above the exact-union limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dream_hpc.config import READ_PATTERNS
from dream_hpc.core.workunit import WorkUnit

GiB = 1024.0  # MB per GiB
FULL_PIXELS = 2048 * 2048

# (cpu seconds, MB) = fixed + per-item; items are named beside each constant
SIM_FIXED_S, SIM_PER_PIXGROUP_S = 0.5, 1.5e-6  # pixel-groups = pixels x ngroups x nints
SIM_PER_GALAXY_S, GALAXIES_PER_ARCMIN2 = 0.006, 350.0  # Sersic stamps; DREaM-like density to AB ~28.5
SIM_FIXED_MB, SIM_PER_DARKFRAME_MB = 1000.0, 33.5  # imports + one FULL float64 dark frame per frame read
SIM_PER_PIXGROUP_MB = 1.4e-4  # ~17 float64 copies of the group ramp
DET1_FIXED_S, DET1_PER_PIXGROUP_S = 0.65, 3.9e-7  # pixel-groups = pixels x ngroups x nints
DET1_FIXED_MB, DET1_PER_PIXGROUP_MB = 500.0, 6.8e-5  # worker imports + jump: ~17x the float32 ramp
IMG2_FIXED_S, IMG2_PER_PIX_S = 0.3, 2.4e-7
IMG2_FIXED_MB, IMG2_PER_PIX_MB = 450.0, 2.0e-4  # worker imports + ~200 bytes per pixel
IMG3_FIXED_S, IMG3_PER_INPUT_S = 0.84, 1.05  # per input: source finding set-up, WCS corrector, models
IMG3_PER_INPUT_PIX_S = 2.8e-6  # tweakreg's source finding, drizzling each input twice (outlier, resample)
IMG3_PER_LAYER_PIX_S = 8.3e-8  # outlier_detection: one mosaic-sized layer per exposure group, then the median
IMG3_PER_PAIR_S = 0.012  # footprint overlap tests, per (input, other group) pair: ~2 tests of 5 ms-0.1 s
IMG3_PER_EXACT_PAIR_S, IMG3_EXACT_UNION_MAX = 0.0685, 50  # tweakreg's exact footprint union, <= 50 images
IMG3_FIXED_MB, IMG3_PER_INPUT_PIX_MB = 318.0, 1.27e-5  # jwst imported (a worker with Mirage starts higher)
IMG3_PER_OUTPUT_PIX_MB = 1.73e-4  # mosaic planes, segmentation and background maps (~180 bytes per pixel)
IMG3_PER_LAYER_PIX_MB = 4.0 / 2**20  # the float32 median stack: 4 bytes per group and mosaic pixel
IMG3_MOSAIC_PER_INPUT_PIXEL = 0.35  # i2d pixels per input pixel (demo 0.34, FULL 0.33, cosmos-web plan 0.37)
IMG3_SOURCES_PER_ARCMIN2 = 520.0  # sources found per arcmin^2 of input (the demo surveys' mosaic catalogs: SW 513, LW 535)
IMG3_REF_SOURCES = 22.0  # sources per input of the runs the constants above were fitted on (SW SUB400P)
IMG3_OVERLAP_PAIR_S = 0.215  # polygon CPU s per overlapping pair at IMG3_REF_SOURCES (bench polygon tally)
IMG3_SOURCE_EXPONENT = 1.0 / 3.0  # per-pair polygon cost ~ sources^(1/3)
TWEAKREG_BRIGHTEST = 200  # jwst's tweakreg `brightest` default: sources kept per input
IMG3_FIT_TOLERANCE = 1.8  # every measured run lies within this factor of the model (CPU and memory)
PIXEL_SCALE = {"SHORT": 0.031, "LONG": 0.063}  # arcsec, native (Image3 default output scale)


@dataclass
class StageCost:
    cpu_s: float
    mem_mb: float


def frames_simulated(readpatt: str, ngroups: int, nints: int) -> int:
    nframes, groupgap = READ_PATTERNS[readpatt]
    return nints * (ngroups * (nframes + groupgap))


def unit_pixels(unit: WorkUnit) -> int:
    from dream_hpc.plan import footprint

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


def tweakreg_sources(pixels: float, channel: str, brightest: int | None = None) -> float:
    """Sources tweakreg works with per input of `pixels` native pixels of `channel` (SHORT | LONG)."""
    area_arcmin2 = pixels * PIXEL_SCALE[channel] ** 2 / 3600.0
    cap = TWEAKREG_BRIGHTEST if brightest is None else brightest
    return float(min(cap, IMG3_SOURCES_PER_ARCMIN2 * area_arcmin2))


def image3_cost(n_inputs: int, input_pixels: int, output_pixels: float, n_groups: int | None = None,
                sources_per_input: float | None = None, overlapping_pairs: float | None = None) -> StageCost:
    """One Image3 over `n_inputs` cal files totalling `input_pixels`, drizzled onto `output_pixels`.

    `output_pixels` <= 0 means unknown: IMG3_MOSAIC_PER_INPUT_PIXEL x `input_pixels` is assumed.
    `n_groups` is the number of exposures (jwst groups all detectors of one exposure): outlier
    detection stacks one layer per group, tweakreg aligns groups. Default: one input per exposure,
    as in a one-detector-per-filter survey; with several detectors per exposure pass it, else the
    stack and pair terms are overestimated by up to the detectors per exposure.
    `sources_per_input` (`tweakreg_sources`; default IMG3_REF_SOURCES, what the constants were fitted
    on) and `overlapping_pairs` (plan/overlaps.py; default: every pair overlaps) set what more sources
    add to the footprint tests that overlap.
    """
    n = max(int(n_inputs), 0)
    groups = n if n_groups is None else min(max(int(n_groups), 1), n)
    mosaic = output_pixels if output_pixels > 0 else IMG3_MOSAIC_PER_INPUT_PIXEL * input_pixels
    layers = groups * mosaic  # pixels of the median stack
    pairs = n * max(groups - 1, 0) / 2.0  # each input's footprint against every other group's
    exact = min(n, IMG3_EXACT_UNION_MAX)
    sources = IMG3_REF_SOURCES if sources_per_input is None else float(sources_per_input)
    overlapping = pairs if overlapping_pairs is None else min(float(overlapping_pairs), pairs)
    more_sources = max(0.0, (sources / IMG3_REF_SOURCES) ** IMG3_SOURCE_EXPONENT - 1.0)
    cpu = (IMG3_FIXED_S + IMG3_PER_INPUT_S * n + IMG3_PER_INPUT_PIX_S * input_pixels + IMG3_PER_LAYER_PIX_S * layers
           + IMG3_PER_PAIR_S * pairs + IMG3_PER_EXACT_PAIR_S * exact * (exact - 1) / 2.0
           + IMG3_OVERLAP_PAIR_S * more_sources * overlapping)
    mem = (IMG3_FIXED_MB + IMG3_PER_INPUT_PIX_MB * input_pixels + IMG3_PER_OUTPUT_PIX_MB * mosaic
           + IMG3_PER_LAYER_PIX_MB * layers)
    return StageCost(cpu, mem)


def units_image3_cost(units: list[WorkUnit], output_pixels: float = 0.0, brightest: int | None = None) -> StageCost:
    """`image3_cost` of a mosaic over `units`: their pixels, exposure groups, sources per input (mean
    pixels per input in their channel) and overlapping pairs (plan/overlaps.py)."""
    from dream_hpc.plan.overlaps import overlapping_pairs

    if not units:
        return image3_cost(0, 0, output_pixels)
    pixels = sum(unit_pixels(u) for u in units)
    sources = tweakreg_sources(pixels / len(units), units[0].channel, brightest)
    return image3_cost(len(units), pixels, output_pixels, exposure_groups(units), sources,
                       overlapping_pairs(units))


def exposure_groups(units: list[WorkUnit]) -> int:
    """Exposures among `units`: jwst's group_id joins the detectors of one exposure (image3's `n_groups`)."""
    return len({(u.program, u.observation, u.visit, u.visit_group, u.sequence, u.activity, u.exposure)
                for u in units})


def ranks_per_node(peak_unit_mb: float, node_mem_gb: float, node_cores: int, reserve: float = 0.15) -> int:
    """How many single-threaded ranks fit on a node: cores, or memory (keeping `reserve` for the OS)."""
    by_memory = math.floor(node_mem_gb * GiB * (1.0 - reserve) / max(peak_unit_mb, 1.0))
    return max(0, min(node_cores, by_memory))
