"""Survey configuration: the schema, its defaults (the only place they live) and validation.

A config is one YAML file. Every key is declared here as a dataclass field with a type and a
default; `load_config` rejects unknown keys, wrong types and impossible combinations with one
line that names the key and the fix, before any compute starts.

One concern, read top to bottom (constants, the sections, coercion, cross-field validation, loading):
the schema is the documentation of every key, so it stays in one file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# --- NIRCam facts used for validation (not user-tunable) -------------------------------------
SW_DETECTORS = tuple(f"NRC{m}{i}" for m in "AB" for i in range(1, 5))
LW_DETECTORS = ("NRCA5", "NRCB5")
SW_FILTERS = ("F070W", "F090W", "F115W", "F140M", "F150W", "F150W2", "F162M", "F164N", "F182M",
              "F187N", "F200W", "F210M", "F212N")
LW_FILTERS = ("F250M", "F277W", "F300M", "F322W2", "F323N", "F335M", "F356W", "F360M", "F405N",
              "F410M", "F430M", "F444W", "F460M", "F466N", "F470N", "F480M")
READ_PATTERNS = {  # name: (nframes, groupgap) as in NIRCam's read pattern definitions
    "RAPID": (1, 0), "BRIGHT1": (1, 1), "BRIGHT2": (2, 0), "SHALLOW2": (2, 3), "SHALLOW4": (4, 1),
    "MEDIUM2": (2, 8), "MEDIUM8": (8, 2), "DEEP2": (2, 18), "DEEP8": (8, 12),
}
SUBARRAYS = ("FULL", "SUB640", "SUB320", "SUB160", "SUB400P", "SUB160P", "SUB64P")
# The point-source subarrays (*P) exist only on these detectors (SIAF / Mirage subarray definitions).
POINT_SOURCE_SUBARRAY_DETECTORS = ("NRCA3", "NRCA5", "NRCB1", "NRCB5")
PIPELINES = ("detector1", "image2", "image3")
# pipeline -> its class in jwst.pipeline (references/lookup.pipeline_class imports it)
PIPELINE_CLASSES = {"detector1": "Detector1Pipeline", "image2": "Image2Pipeline", "image3": "Image3Pipeline"}


class ConfigError(ValueError):
    """A config problem, phrased as one line: where, what, and how to fix it."""


def is_short_wave(detector: str) -> bool:
    return detector.upper() in SW_DETECTORS


# --- schema ---------------------------------------------------------------------------------
@dataclass
class SurveySection:
    name: str = "dream-survey"
    program: str = "09999"  # APT program id, 5 digits (quoted in YAML: 01234 would be octal)
    observation: int = 1
    seed: int = 20221026  # survey seed; every per-unit seed derives from it and the unit id
    start_date: str = "2024-01-01"  # observation date (UTC) of the first exposure
    start_time: str = "00:00:00.000"


@dataclass
class CatalogColumns:
    """Catalog column names, DREaM's own by default; `mag` is a template with {filter}.

    DREaM (Drakos et al. 2022) as its author reads it: a main table with RA, Dec (deg), redshift,
    R_eff (semi-major half-light radius, physical kpc), q (b/a), n_s (Sersic index), PA (radians)
    and a row-aligned photometry table with AB magnitudes named like JWST_nircam_F150W. Names
    match case-insensitively (JWST_NIRCam_F150W is found too); map other catalogs' names here
    (`dream-hpc catalog check` names any column it cannot find and this key).
    """

    id: str = "ID"  # optional: absent means the row number (DREaM has none)
    ra: str = "RA"
    dec: str = "Dec"
    redshift: str = "redshift"
    mag: str = "JWST_nircam_{filter}"  # AB magnitude per filter (main or photometry table)
    sersic: str = "n_s"
    radius: str = "R_eff"  # half-light radius along the semi-major axis (catalog.radius_unit)
    axis_ratio: str = "q"  # b/a
    position_angle: str = "PA"  # of the semi-major axis, East of North (catalog.pa_unit)
    is_star: str = "is_star"  # optional boolean column; absent means all galaxies


@dataclass
class CatalogSynth:
    """How `dream-hpc catalog synth` (and `make demo`) draws a DREaM-like mock for the footprint."""

    mag_limit: float = 28.5
    margin_arcsec: float = 20.0
    density_scale: float = 1.0  # >1 packs more galaxies per area than the real sky (demo convenience)
    star_density_arcmin2: float = 2.0  # stars per arcmin^2 (COSMOS-like high latitude by default)
    star_mag_range: tuple[float, float] = (18.0, 24.0)


@dataclass
class CatalogSection:
    path: str = "catalog.fits"  # main table: FITS, HDF5 or ECSV; relative paths are relative to the config file
    # Optional second table with the magnitudes (DREaM ships one): row-aligned with `path`, or joined
    # on the column `join_on` present in both. Empty: the magnitudes are in the main table.
    photometry: str = ""
    join_on: str = ""
    format: str = "auto"  # auto | fits | hdf5 | ecsv
    hdf5_dataset: str = "catalog"
    columns: CatalogColumns = field(default_factory=CatalogColumns)
    margin_arcsec: float = 3.0  # sources this far outside a detector still get simulated (PSF wings)
    mag_limit: float = 29.0  # fainter sources are not simulated
    # Units of the mapped columns, DREaM's by default: radii in physical kpc (converted to arcsec with
    # the redshift in `cosmology`), PA in radians, AB magnitudes.
    radius_unit: str = "kpc"  # kpc | arcsec
    pa_unit: str = "rad"  # rad | deg
    mag_unit: str = "ABmag"  # ABmag | nJy (flux columns are converted to AB magnitudes)
    cosmology: str = "Planck18"  # an astropy.cosmology realization (kpc -> arcsec); recorded with the run
    # DREaM is centred on RA = Dec = 0. recenter: true moves the catalog from `recenter_from` onto
    # pointings.center_ra/dec as a rotation of the sphere (gnomonic projection about one, back about the other).
    recenter: bool = False
    recenter_from: tuple[float, float] = (0.0, 0.0)
    prepared_nside: int = 4096  # HEALPix cells (nested) of the prepared catalog: 4096 = 0.86' cells
    prepared_keep: int = 2  # prepared catalogs of this survey kept in the user cache, newest first (0: all)
    synth: CatalogSynth = field(default_factory=CatalogSynth)


@dataclass
class DitherSection:
    points: int = 3  # exposures per pointing
    step_arcsec: float = 1.0  # size of the dither pattern
    pattern: str = "line"  # line | box | random (random is seeded by the survey seed)


@dataclass
class AptSection:
    xml: str = ""  # APT export (.xml)
    pointing: str = ""  # APT export (.pointing)


@dataclass
class PointingSection:
    mode: str = "mosaic"  # mosaic | apt
    center_ra: float = 150.1163  # deg (COSMOS)
    center_dec: float = 2.2010
    pa_v3: float = 0.0  # deg, telescope roll
    rows: int = 1
    cols: int = 1
    # Mosaic tile spacing (ideal x, ideal y) in arcsec; 0 = the units' footprint width minus `overlap`.
    # cols run along ideal x (NIRCam's long 5.1' axis), rows along ideal y.
    step_arcsec: tuple[float, float] = (0.0, 0.0)
    overlap: float = 0.1  # fractional tile overlap used when step_arcsec is 0
    dither: DitherSection = field(default_factory=DitherSection)
    apt: AptSection = field(default_factory=AptSection)


@dataclass
class ReadoutSection:
    readpatt: str = "BRIGHT2"
    ngroups: int = 4
    nints: int = 1


@dataclass
class InstrumentSection:
    detectors: list[str] = field(default_factory=lambda: ["NRCB1", "NRCB5"])
    # One (SW, LW) filter pair per visit sequence: NIRCam images both channels at once.
    filter_pairs: list[tuple[str, str]] = field(default_factory=lambda: [("F150W", "F277W")])
    subarray: str = "SUB400P"
    readout: ReadoutSection = field(default_factory=ReadoutSection)


@dataclass
class PointingErrorSection:
    """Where each visit really points: nominal + a seeded error (headers keep the nominal pointing).

    JWST's absolute pointing after guide-star acquisition is limited by the guide star's catalogue
    position (GSC tied to Gaia): of order tens of mas per axis, within the 0.1" (1 sigma) requirement
    (Rigby et al. 2023, PASP 135, 048001, sec. on pointing); a small-angle maneuver between dithers of one
    visit (same guide star) is good to a few mas. tweakreg exists to remove exactly this.
    """

    enabled: bool = True
    visit_sigma_mas: float = 25.0  # per axis, per visit (guide-star acquisition)
    dither_sigma_mas: float = 3.0  # per axis, per exposure within a visit (small-angle maneuvers)
    roll_sigma_arcsec: float = 1.0  # telescope roll error per visit
    # > 0: every visit's error is exactly this long, in a random direction (stress tests: a known size)
    fixed_visit_mas: float = 0.0


@dataclass
class ReferenceCatalogSection:
    """The local absolute-astrometry catalog tweakreg aligns to (`abs_refcat`), made from the truth."""

    kind: str = "gaia"  # gaia: stars only, Gaia-DR3-like; hst: stars + compact galaxies, HST/ACS-like
    mag_limit: float = 21.0  # gaia: G ~ 21 (~ the catalogue's limit); hst: e.g. 26 (COSMOS ACS F814W)
    # per-source position error (mas, per axis) at the bright end and at mag_limit (grows exponentially):
    # Gaia DR3 ~0.02-0.5 mas at G 15-20 plus ~2 mas proper-motion drift to a 2024 epoch; ACS/COSMOS ~10 mas
    error_bright_mas: float = 1.0
    error_faint_mas: float = 3.0


@dataclass
class SimulationSection:
    # zodiacal: per exposure from its filter, field and date (stages/zodiacal.py, Leinert et al. 1998, offline);
    # a number: that many ADU/s/pixel in every filter. Handed to Mirage as `bkgdrate`, always a number:
    # Mirage's own low/medium/high would download jwst_backgrounds' model.
    background_rate: float | str = "zodiacal"
    pointing_error: PointingErrorSection = field(default_factory=PointingErrorSection)
    reference_catalog: ReferenceCatalogSection = field(default_factory=ReferenceCatalogSection)
    cosmic_rays: bool = True
    cosmic_ray_library: str = "SUNMIN"
    cosmic_ray_scale: float = 1.0
    psf_wings: bool = False


@dataclass
class ReferencesSection:
    crds_path: str = "build/refkit/crds_cache"  # relative paths: relative to the config file
    context: str = "jwst_0001.pmap"  # pinned CRDS context
    mirage_data: str = "build/refkit/mirage_data"


@dataclass
class PipelineSection:
    """Per-step overrides, `{step_name: {parameter: value}}`; anything unset keeps jwst's default."""

    detector1: dict[str, dict[str, Any]] = field(default_factory=dict)
    image2: dict[str, dict[str, Any]] = field(default_factory=dict)
    image3: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MosaicSection:
    """The survey's one pixel grid (one tangent point, rotation and pixel scale) cut into Image3 tiles.

    Tiles differ only in crpix and output_shape (plan/grid.py); each is one resample + source_catalog task.
    """

    crval: tuple[float, float] | None = None  # deg, the grid's tangent point; null: pointings.center_ra/dec
    rotation: float | None = None  # deg, the grid's Y axis east of north (jwst resample `rotation`); null: pa_v3
    pixel_scale_sw: float = 0.03  # arcsec per mosaic pixel, short-wave filters (COSMOS-Web, CEERS)
    pixel_scale_lw: float = 0.06  # arcsec, long-wave filters (set both equal for one grid for all filters)
    tiles: tuple[int, int] | None = None  # [cols, rows] per filter; null: as few as fit node_mem_gb
    tile_overlap_arcsec: float = 3.0  # each tile reaches this far beyond its core (sources near a core edge)
    node_mem_gb: float = 24.0  # default tile size: the largest tile's Image3 fits this by the cost model
    min_matches: int = 5  # an exposure's frozen WCS needs at least this many matched reference stars
    # tiles: astrometry per visit, outliers per padded visit, resample + catalog per tile (stages/tiles.py);
    # single: one Image3 per filter over all its exposures (fine for a few dozen inputs, not a survey)
    mode: str = "single"


@dataclass
class EngineSection:
    unit_timeout_s: float = 0.0  # 0: derived from the plan's estimate (x timeout_factor)
    timeout_factor: float = 10.0
    min_timeout_s: float = 300.0
    allow_partial_mosaic: bool = False
    keep_intermediate: bool = True  # keep *_uncal and *_rate after a unit finishes
    # Rank 0 also computes (its worker subprocess) while it hands out units; measured faster on
    # 2 ranks / 2 cores (bench/bench_engine.py). false: rank 0 only coordinates (very many ranks).
    coordinator_works: bool = True
    progress_interval_s: float = 30.0  # seconds between progress lines when stderr is not a terminal
    # A worker keeps the reference models it just used (dark, superbias, linearity, ... flat) for the
    # next unit of the same detector/readout, up to this many GiB (stages/hot_references.py; 0: off).
    # With the kit one FULL detector's set is ~0.35 GiB; flight FULL darks are several GiB each (raise
    # it above the dark's size to keep one). 1 GiB: the scheduler keeps a rank on one kind, and every
    # rank of a node pays it (`plan --measured` sees it in the measured peaks; the model does not).
    reference_cache_gb: float = 1.0


@dataclass
class SurveyConfig:
    survey: SurveySection = field(default_factory=SurveySection)
    catalog: CatalogSection = field(default_factory=CatalogSection)
    pointings: PointingSection = field(default_factory=PointingSection)
    instrument: InstrumentSection = field(default_factory=InstrumentSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    references: ReferencesSection = field(default_factory=ReferencesSection)
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    mosaic: MosaicSection = field(default_factory=MosaicSection)
    engine: EngineSection = field(default_factory=EngineSection)
    # Not part of the YAML: where the file was read from (relative paths resolve against it).
    source: Path | None = field(default=None, repr=False, compare=False)
    text: str = field(default="", repr=False, compare=False)

    def resolve(self, path: str) -> Path:
        """A path from the config, absolute; relative ones are relative to the config file."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return p.resolve()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        d.pop("text", None)
        return _plain(d)


# --- loading and validation -----------------------------------------------------------------
_YAML_ONLY = {"source", "text"}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting what YAML cannot express (tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return _build(tp, value, where)
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        errors = []
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected nothing (null), got {value!r}")
        return None
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise ConfigError(f"{where}: expected a list of {len(items)} values, got {value!r}")
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, items, strict=True)))
    if origin is dict:
        ktp, vtp = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, ktp, where): _coerce(v, vtp, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            hint = " (quote it: YAML reads 01234 as a number)" if isinstance(value, int) else ""
            raise ConfigError(f"{where}: expected text, got {value!r}{hint}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _YAML_ONLY]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            import difflib

            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(names)}"
            raise ConfigError(f"{path}: unknown key ({hint})")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


# Ranges of numeric keys the types alone allow but no survey can use (key: (low, high), inclusive;
# None = unbounded). Sizes are capped where a typo would plan millions of exposures or exhaust memory.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "survey.observation": (1, 999),  # APT observation numbers are 3 digits
    "catalog.margin_arcsec": (0, 3600), "catalog.mag_limit": (-10, 50),
    "catalog.synth.mag_limit": (-10, 50), "catalog.synth.margin_arcsec": (0, 3600),
    "catalog.synth.density_scale": (0, 1000), "catalog.synth.star_density_arcmin2": (0, 1e5),
    "pointings.center_ra": (-360, 360), "pointings.pa_v3": (-360, 360),
    "pointings.rows": (None, 1000), "pointings.cols": (None, 1000),
    "pointings.dither.points": (None, 1000), "pointings.dither.step_arcsec": (0, 3600),
    "instrument.readout.nints": (None, 1000),
    "simulation.background_rate": (0, 1e6), "simulation.cosmic_ray_scale": (0, 1e3),
    "engine.unit_timeout_s": (0, None), "engine.timeout_factor": (None, 1e6), "engine.min_timeout_s": (0, None),
    "engine.progress_interval_s": (0, 1e6), "engine.reference_cache_gb": (0, 1e6),
}


def _numbers(obj: Any, where: str = "") -> typing.Iterator[tuple[str, Any]]:
    """(dotted key, value) of every number in a config dict (tuple items as key[i])."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{where}[{i}]")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield where, obj


def _check_numbers(cfg: SurveyConfig) -> None:
    import math

    plain = cfg.to_dict()
    plain.pop("pipeline", None)  # step parameters are checked against jwst's own specs (stages/params.py)
    for key, value in _numbers(plain):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: {value} is not a finite number (give a number)")
        low, high = RANGES.get(key, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise ConfigError(f"{key}: {value} is outside {span}")
    lo, hi = cfg.catalog.synth.star_mag_range
    if lo > hi:
        raise ConfigError(f"catalog.synth.star_mag_range: [{lo}, {hi}] is reversed (write [bright, faint])")


def validate(cfg: SurveyConfig) -> None:
    """Cross-field checks: combinations the schema's types alone cannot rule out."""
    _check_numbers(cfg)
    ins = cfg.instrument
    if not ins.detectors:
        raise ConfigError("instrument.detectors: empty (list at least one detector, e.g. [NRCB1])")
    for i, det in enumerate(ins.detectors):
        if det.upper() not in SW_DETECTORS + LW_DETECTORS:
            raise ConfigError(f"instrument.detectors[{i}]: unknown detector {det!r} "
                              f"(choose from {', '.join(SW_DETECTORS + LW_DETECTORS)})")
    if len(set(ins.detectors)) != len(ins.detectors):
        raise ConfigError("instrument.detectors: a detector is listed twice")
    if not ins.filter_pairs:
        raise ConfigError("instrument.filter_pairs: empty (give at least one [SW, LW] pair, e.g. [F150W, F277W])")
    for i, (sw, lw) in enumerate(ins.filter_pairs):
        if sw.upper() in LW_FILTERS:
            raise ConfigError(f"instrument.filter_pairs[{i}]: {sw} is a long-wave filter in the short-wave "
                              f"slot (write pairs as [SW, LW], e.g. [F150W, {sw}])")
        if sw.upper() not in SW_FILTERS:
            raise ConfigError(f"instrument.filter_pairs[{i}][0]: unknown short-wave filter {sw!r} "
                              f"(choose from {', '.join(SW_FILTERS)})")
        if lw.upper() in SW_FILTERS:
            raise ConfigError(f"instrument.filter_pairs[{i}]: {lw} is a short-wave filter in the long-wave "
                              f"slot (write pairs as [SW, LW], e.g. [{lw}, F277W])")
        if lw.upper() not in LW_FILTERS:
            raise ConfigError(f"instrument.filter_pairs[{i}][1]: unknown long-wave filter {lw!r} "
                              f"(choose from {', '.join(LW_FILTERS)})")
    if ins.subarray not in SUBARRAYS:
        raise ConfigError(f"instrument.subarray: unknown subarray {ins.subarray!r} (choose from {', '.join(SUBARRAYS)})")
    if ins.subarray.endswith("P"):
        others = [d for d in ins.detectors if d.upper() not in POINT_SOURCE_SUBARRAY_DETECTORS]
        if others:
            raise ConfigError(f"instrument.subarray: {ins.subarray} does not exist on {', '.join(others)} (only on "
                              f"{', '.join(POINT_SOURCE_SUBARRAY_DETECTORS)}); use SUB160/SUB320/SUB640 or FULL")
    ro = ins.readout
    if ro.readpatt not in READ_PATTERNS:
        raise ConfigError(f"instrument.readout.readpatt: unknown pattern {ro.readpatt!r} "
                          f"(choose from {', '.join(READ_PATTERNS)})")
    if not 2 <= ro.ngroups <= 20:
        raise ConfigError(f"instrument.readout.ngroups: {ro.ngroups} is outside 2..20 (a slope needs 2 groups)")
    if ro.nints < 1:
        raise ConfigError(f"instrument.readout.nints: {ro.nints} must be at least 1")
    s = cfg.survey
    if not (len(s.program) == 5 and s.program.isdigit()):
        raise ConfigError(f"survey.program: {s.program!r} must be 5 digits, quoted (e.g. '01234')")
    if not 0 <= s.seed < 2**32:
        raise ConfigError(f"survey.seed: {s.seed} must be in 0..2**32-1")
    import datetime as _dt

    try:
        _dt.date.fromisoformat(s.start_date)
    except ValueError:
        raise ConfigError(f"survey.start_date: {s.start_date!r} is not a date (write YYYY-MM-DD)") from None
    p = cfg.pointings
    if p.mode not in ("mosaic", "apt"):
        raise ConfigError(f"pointings.mode: {p.mode!r} (choose mosaic or apt)")
    if p.mode == "apt" and not (p.apt.xml and p.apt.pointing):
        raise ConfigError("pointings.apt: mode is apt but xml/pointing are not both given (name the APT exports)")
    if p.mode == "mosaic" and (p.rows < 1 or p.cols < 1):
        raise ConfigError("pointings.rows/cols: must be at least 1")
    if not -90 <= p.center_dec <= 90:
        raise ConfigError(f"pointings.center_dec: {p.center_dec} is not a declination (-90..90)")
    if p.dither.points < 1:
        raise ConfigError("pointings.dither.points: must be at least 1")
    if p.dither.pattern not in ("line", "box", "random"):
        raise ConfigError(f"pointings.dither.pattern: {p.dither.pattern!r} (choose line, box or random)")
    if cfg.catalog.radius_unit not in ("arcsec", "kpc"):
        raise ConfigError(f"catalog.radius_unit: {cfg.catalog.radius_unit!r} (choose arcsec or kpc)")
    if cfg.catalog.mag_unit not in ("ABmag", "nJy"):
        raise ConfigError(f"catalog.mag_unit: {cfg.catalog.mag_unit!r} (choose ABmag or nJy)")
    if not 0.0 <= p.overlap < 0.9:
        raise ConfigError(f"pointings.overlap: {p.overlap} must be in 0..0.9 (fraction of a tile)")
    if min(p.step_arcsec) < 0:
        raise ConfigError("pointings.step_arcsec: tile spacing cannot be negative (0 = automatic)")
    if cfg.catalog.pa_unit not in ("rad", "deg"):
        raise ConfigError(f"catalog.pa_unit: {cfg.catalog.pa_unit!r} (choose rad or deg)")
    nside = cfg.catalog.prepared_nside
    if nside < 1 or nside & (nside - 1) or nside > 2**20:
        raise ConfigError(f"catalog.prepared_nside: {nside} (a power of 2 up to 2**20, e.g. 4096)")
    if cfg.catalog.prepared_keep < 0:
        raise ConfigError(f"catalog.prepared_keep: {cfg.catalog.prepared_keep} (how many prepared catalogs the "
                          "user cache keeps per survey: 1 or more, or 0 to keep all)")
    if cfg.catalog.cosmology not in ("Planck13", "Planck15", "Planck18", "WMAP9", "WMAP7", "WMAP5"):
        raise ConfigError(f"catalog.cosmology: {cfg.catalog.cosmology!r} (choose an astropy realization: "
                          "Planck18, Planck15, Planck13, WMAP9, WMAP7 or WMAP5)")
    if "{filter}" not in cfg.catalog.columns.mag:
        raise ConfigError(f"catalog.columns.mag: {cfg.catalog.columns.mag!r} has no {{filter}} (e.g. JWST_nircam_{{filter}})")
    if cfg.catalog.format not in ("auto", "fits", "hdf5", "ecsv"):
        raise ConfigError(f"catalog.format: {cfg.catalog.format!r} (choose auto, fits, hdf5 or ecsv)")
    ctx = cfg.references.context
    import re

    if not re.fullmatch(r"jwst_\d{4}\.pmap", ctx):
        raise ConfigError(f"references.context: {ctx!r} is not a pinned JWST context (write jwst_NNNN.pmap)")
    for name in PIPELINES:
        for step, params in getattr(cfg.pipeline, name).items():
            if not isinstance(params, dict):
                raise ConfigError(f"pipeline.{name}.{step}: expected a mapping of step parameters")
    mos = cfg.mosaic
    if mos.mode not in ("tiles", "single"):
        raise ConfigError(f"mosaic.mode: {mos.mode!r} (choose tiles or single)")
    if mos.pixel_scale_sw <= 0 or mos.pixel_scale_lw <= 0:
        raise ConfigError("mosaic.pixel_scale_sw/_lw: must be > 0 (arcsec per mosaic pixel, e.g. 0.03 and 0.06)")
    if mos.tiles is not None and min(mos.tiles) < 1:
        raise ConfigError(f"mosaic.tiles: {list(mos.tiles)} (give [cols, rows] >= 1, or null to size by memory)")
    if mos.tile_overlap_arcsec < 0 or mos.node_mem_gb <= 0:
        raise ConfigError("mosaic.tile_overlap_arcsec must be >= 0 and mosaic.node_mem_gb > 0")
    if cfg.engine.timeout_factor <= 1:
        raise ConfigError("engine.timeout_factor: must be > 1")
    pe = cfg.simulation.pointing_error
    for key in ("visit_sigma_mas", "dither_sigma_mas", "roll_sigma_arcsec", "fixed_visit_mas"):
        if getattr(pe, key) < 0:
            raise ConfigError(f"simulation.pointing_error.{key}: {getattr(pe, key)} cannot be negative")
    bg = cfg.simulation.background_rate
    if isinstance(bg, str) and bg != "zodiacal":
        raise ConfigError(f"simulation.background_rate: {bg!r} (give zodiacal, a level per filter for the field and "
                          "date, or a number of ADU/s/pixel; Mirage's low/medium/high would query the archive)")
    rc = cfg.simulation.reference_catalog
    if rc.kind not in ("gaia", "hst"):
        raise ConfigError(f"simulation.reference_catalog.kind: {rc.kind!r} (choose gaia or hst)")
    if rc.error_bright_mas < 0 or rc.error_faint_mas < rc.error_bright_mas:
        raise ConfigError("simulation.reference_catalog.error_faint_mas: must be >= error_bright_mas >= 0")


def parse_config(text: str, source: Path | None = None) -> SurveyConfig:
    name = str(source) if source else "config"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # PyYAML's reader errors span lines
        raise ConfigError(f"{name}: not valid YAML{at} ({problem}); fix the syntax") from None
    if data is None or data == {}:
        raise ConfigError(f"{name}: the config is empty (it would silently plan an all-defaults survey); start from config/demo.yaml (every key and its default: "
                          "`dream-hpc params`)")
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping of sections at the top level (survey:, pointings:, "
                          f"instrument: ...), not a {type(data).__name__}; start from config/demo.yaml")
    try:
        cfg = _build(SurveyConfig, data, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    cfg.source = source.resolve() if source else None
    cfg.text = text
    return cfg


def load_config(path: str | Path) -> SurveyConfig:
    """Read and validate a survey config; raises ConfigError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (check the path, e.g. config/demo.yaml)")
    return parse_config(path.read_text(), path)


def defaults() -> SurveyConfig:
    return SurveyConfig()


def defaults_yaml() -> str:
    """Every config key with its default, as YAML (shown by `dream-hpc params`)."""
    return yaml.safe_dump(defaults().to_dict(), sort_keys=False)
