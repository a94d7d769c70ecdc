"""Step parameters of the three pipelines: `dream-hpc params` and the check of a config's step overrides.

The seed notes asked "what are all the options, should I alter any defaults?" once per pipeline.
`dream-hpc params CONFIG` answers from stpipe's own spec of every step of Detector1, Image2 and
Image3: each parameter, jwst's default, the value the survey sets (and a CRDS `pars-*` value where
the pinned context has one), with a short note on the parameters that matter most for NIRCam
imaging surveys. `validate_step_overrides` rejects a misspelt step or parameter before any compute.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any

from dream_hpc.config import PIPELINE_CLASSES, PIPELINES, ConfigError, SurveyConfig
from dream_hpc.references.lookup import pipeline_class

# stpipe plumbing present in every step's spec. dream-hpc decides where products go, so a survey
# may not set these; `skip` and `save_results` stay per-step choices.
MANAGED = ("pre_hooks", "post_hooks", "output_file", "output_dir", "output_ext", "output_use_model",
           "output_use_index", "search_output_file", "input_dir", "suffix")
COMMON = MANAGED + ("save_results", "skip")

# The parameters that matter most for a NIRCam imaging survey, and why (jwst 3.0 names).
NOTES: dict[tuple[str, str, str], str] = {
    ("detector1", "saturation", "n_pix_grow_sat"):
        "also flags this many neighbours of saturated pixels (charge spill around bright stars)",
    ("detector1", "refpix", "odd_even_columns"):
        "reference-pixel (1/f, bias drift) correction; only as good as the reference pixels the subarray includes",
    ("detector1", "persistence", "skip"):
        "\"should I get a traps-filled file?\" No: in jwst 3.0 the step was rewritten as flagging of pixels that "
        "saturated earlier (persistence_time, dn_threshold, persistence_array_file), skipped by default, and "
        "input_trapsfilled is gone; Mirage simulates no persistence, so keep it skipped for these simulations",
    ("detector1", "persistence", "persistence_time"):
        "real data only: the window (s) after a saturation in which a pixel is flagged (survey teams use ~2500 s, "
        "cf. snowblind's PersistenceFlagStep); needs the exposures of a detector in time order",
    ("detector1", "jump", "rejection_threshold"):
        "cosmic-ray cut (sigma) per group difference with 5+ groups: lower flags more CRs but also real signal "
        "on bright sources",
    ("detector1", "jump", "three_group_rejection_threshold"):
        "replaces rejection_threshold when an integration has exactly 3 groups",
    ("detector1", "jump", "four_group_rejection_threshold"):
        "replaces rejection_threshold when an integration has exactly 4 groups",
    ("detector1", "jump", "expand_large_events"):
        "snowball flagging: needed on real NIRCam data, not on simulations without snowballs (and ~5x slower)",
    ("detector1", "jump", "maximum_cores"):
        "keep '1': dream-hpc already runs one exposure per core; multiprocessing inside MPI ranks is unsafe",
    ("detector1", "clean_flicker_noise", "skip"):
        "the 1/f (horizontal striping) correction, off by default; set skip: false for deep imaging where "
        "striping shows in the mosaic",
    ("detector1", "clean_flicker_noise", "fit_method"):
        "median: row medians of the source-masked background (image1overf-like), the one that works for NIRCam "
        "imaging; fft (NSClean, Rauscher 2024) is NIRSpec-only in jwst 3.0: on NRC_IMAGE it warns and does nothing",
    ("detector1", "ramp_fit", "algorithm"):
        "OLS_C: optimally weighted least squares (default); LIKELY: likelihood fit, slower, for many groups",
    ("detector1", "ramp_fit", "maximum_cores"):
        "keep '1' (see jump.maximum_cores)",
    ("image2", "bkg_subtract", "skip"):
        "acts only when the association lists background exposures; imaging surveys match sky in Image3 skymatch",
    ("image2", "resample", "skip"):
        "writes a per-exposure i2d preview; the survey mosaic comes from Image3, so skipping saves time",
    ("image3", "skymatch", "skystat"):
        "default mode (histogram bins of 0.1 sigma) can put false steps of ~0.25 MJy/sr between exposures of one sky "
        "(measured on the demo); median is robust here",
    ("image3", "tweakreg", "minobj"):
        "minimum matched sources for relative alignment; the default 15 is too many for small subarrays: "
        "tweakreg then only warns and leaves the WCS unaligned",
    ("image3", "tweakreg", "snr_threshold"):
        "detection threshold of the sources used for alignment",
    ("image3", "tweakreg", "fitgeometry"):
        "shift / rshift (shift + rotation, default) / rscale / general; keep it simple with few sources",
    ("image3", "tweakreg", "abs_refcat"):
        "absolute astrometry: '' = none; GAIADR3 etc. query the network (forbidden in dream-hpc runs): "
        "give a local catalog file instead",
    ("image3", "tweakreg", "abs_minobj"):
        "minimum matched sources for the absolute fit against abs_refcat",
    ("image3", "skymatch", "skymethod"):
        "how sky levels of overlapping exposures are made consistent before the mosaic (match = equalise "
        "differences; global+match also removes the common level)",
    ("image3", "skymatch", "subtract"):
        "False records the sky level (resample then uses it); True subtracts it from the cal data",
    ("image3", "outlier_detection", "snr"):
        "outlier (CR) rejection between overlapping exposures: lower is more aggressive and can clip bright "
        "star cores; needs ~3+ exposures per pixel to work well",
    ("image3", "outlier_detection", "scale"):
        "derivative scaling that protects sharp sources from being flagged as outliers",
    ("image3", "resample", "pixfrac"):
        "drizzle drop size: < 1 sharpens the PSF when dithers are dense, but adds noise and holes",
    ("image3", "resample", "pixel_scale"):
        "output pixel scale (arcsec); surveys often drizzle all filters to one grid (e.g. 0.03\") so "
        "catalogs align across filters",
    ("image3", "resample", "kernel"):
        "drizzle kernel; square is the flux-conserving default",
    ("image3", "source_catalog", "snr_threshold"):
        "per-pixel detection threshold above background of the segmentation map; with npixels it sets the "
        "catalog depth and the spurious-source rate",
    ("image3", "source_catalog", "npixels"):
        "minimum connected pixels above threshold for a source",
    ("image3", "source_catalog", "bkg_boxsize"):
        "background mesh (pixels): keep it several times smaller than the mosaic",
    ("image3", "source_catalog", "deblend"):
        "splits blended sources; matters in crowded deep fields",
}


@dataclass
class Param:
    name: str
    default: Any
    spec: str  # the stpipe/configobj spec, e.g. "float(default=4.0,min=0)"
    comment: str


@functools.cache
def step_specs(pipeline: str) -> dict[str, Any]:
    """Step name -> its merged stpipe spec (a configobj Section: common, step and override_* keys)."""
    spec = pipeline_class(pipeline).load_spec_file()
    return {name: spec["steps"][name] for name in pipeline_class(pipeline).step_defs}


@functools.cache
def step_parameters(pipeline: str) -> dict[str, list[Param]]:
    """Step name -> its parameters with jwst's defaults, in spec order."""
    defaults = pipeline_class(pipeline)().get_pars()["steps"]
    out = {}
    for step, spec in step_specs(pipeline).items():
        params = []
        for key in spec:
            if key in ("config_file", "name", "class"):
                continue
            comment = (spec.inline_comments.get(key) or "").lstrip("# ").strip()
            params.append(Param(key, defaults[step].get(key), str(spec[key]), comment))
        out[step] = params
    return out


def step_class_name(pipeline: str, step: str) -> str:
    return pipeline_class(pipeline).step_defs[step].__name__


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(choices)}"


def validate_step_overrides(cfg: SurveyConfig) -> None:
    """Raise ConfigError (one line, naming e.g. `pipeline.image3.tweakreg.minobjj`) for any step override
    that is not a real step or parameter, has a value of the wrong type, or is managed by dream-hpc."""
    from stpipe import config_parser

    where = f"{cfg.source}: " if cfg.source else ""
    for pipeline in PIPELINES:
        specs = step_specs(pipeline)
        for step, params in getattr(cfg.pipeline, pipeline).items():
            key = f"pipeline.{pipeline}.{step}"
            if step not in specs:
                raise ConfigError(f"{where}{key}: not a step of {PIPELINE_CLASSES[pipeline]} "
                                  f"({_suggest(step, list(specs))})")
            spec = specs[step]
            names = [k for k in spec if k not in ("config_file", "name", "class")]
            for name, value in (params or {}).items():
                pkey = f"{key}.{name}"
                if name not in names:
                    raise ConfigError(f"{where}{pkey}: not a parameter of {step_class_name(pipeline, step)} "
                                      f"({_suggest(str(name), names)}; `dream-hpc params CONFIG` lists them all)")
                if name in MANAGED:
                    raise ConfigError(f"{where}{pkey}: set by dream-hpc (products go to the run directory); "
                                      "remove it from the config")
                if name.startswith("override_"):
                    raise ConfigError(f"{where}{pkey}: reference overrides bypass the pinned CRDS context "
                                      "(provenance would not record them); put the file in the kit/context instead")
                try:
                    config_parser.config_from_dict({name: value}, spec, allow_missing=True)
                except Exception as e:  # configobj's ValidationError: "the value ... is of the wrong type"
                    raise ConfigError(f"{where}{pkey}: {value!r} is not valid for {spec[name]} "
                                      f"({str(e).split(': ', 1)[-1].rstrip('.')})") from None


# --- CRDS parameter references (pars-*) ---------------------------------------------------------
def _representative_unit(cfg: SurveyConfig):
    from dream_hpc.config import is_short_wave
    from dream_hpc.core.workunit import WorkUnit

    ins = cfg.instrument
    det = ins.detectors[0]
    sw, lw = ins.filter_pairs[0]
    return WorkUnit(program=cfg.survey.program, observation=cfg.survey.observation, visit=1, visit_group=1,
                    sequence=1, activity=1, exposure=1, detector=det, filter=sw if is_short_wave(det) else lw,
                    pupil="CLEAR", subarray=ins.subarray, readpatt=ins.readout.readpatt,
                    ngroups=ins.readout.ngroups, nints=ins.readout.nints, ra=cfg.pointings.center_ra,
                    dec=cfg.pointings.center_dec, pa_v3=cfg.pointings.pa_v3, date_obs=cfg.survey.start_date,
                    time_obs=cfg.survey.start_time)


def crds_parameters(cfg: SurveyConfig) -> tuple[dict[tuple[str, str], dict[str, Any]], str]:
    """(pipeline, step) -> parameters a `pars-*` reference of the pinned context sets, and a note.

    Looked up for one representative exposure; an empty result with a note when the cache is absent.
    """
    import asdf

    from dream_hpc.core import offline
    from dream_hpc.references import lookup

    crds_path = cfg.resolve(cfg.references.crds_path)
    if not (crds_path / "mappings").is_dir():
        return {}, f"no CRDS cache at {crds_path}: pars-* values not shown"
    offline.configure(crds_path=crds_path, context=cfg.references.context)
    unit = _representative_unit(cfg)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for pipeline in PIPELINES:
        cls = pipeline_class(pipeline)
        by_type = {s.get_config_reftype(): name for name, s in cls.step_defs.items()}
        try:
            found = lookup.best_references(unit, list(by_type))
        except Exception as e:  # the table is still useful without this column
            return {}, f"pars-* lookup failed ({str(e).splitlines()[0][:120]})"
        for reftype, path in found.items():
            with asdf.open(path) as af:
                out[(pipeline, by_type[reftype])] = dict(af.tree.get("parameters", {}))
    return out, f"pars-* from {cfg.references.context} for {unit.detector} {unit.filter} on {unit.date_obs}"


# --- the table ---------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """A parameter value as `dream-hpc params` and the run's page show it (quoted when empty or spaced)."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return repr(value) if value == "" or " " in value else value
    return str(value)


def _dynamic_hint(cfg: SurveyConfig, pipeline: str, step: str, name: str) -> str:
    ngroups = cfg.instrument.readout.ngroups
    if (pipeline, step) == ("detector1", "jump") and name.endswith("rejection_threshold") and ngroups >= 3:
        applies = {3: "three_group_rejection_threshold", 4: "four_group_rejection_threshold"}.get(
            ngroups, "rejection_threshold")
        if applies == name:
            return f" [this survey: ngroups={ngroups}, so this one applies]"
    return ""


def render(cfg: SurveyConfig, pipelines: list[str] | None = None, changed_only: bool = False,
           crds: dict[tuple[str, str], dict[str, Any]] | None = None, crds_note: str = "") -> str:
    """The parameter table as text (what `dream-hpc params` prints)."""
    import jwst

    crds = crds or {}
    lines = [f"Step parameters for {cfg.source or 'the default config'} (jwst {jwst.__version__}). "
             "Columns: parameter, jwst default, this survey's value; '*' marks a survey override, "
             "'c' a value set by a CRDS pars-* reference.",
             f"Set values under pipeline.<pipeline>.<step>.<parameter> in the config. {crds_note}".rstrip(),
             f"Every step also takes: {', '.join(COMMON)} ({', '.join(MANAGED[:4])}... are set by dream-hpc; "
             "skip: true turns a step off).", ""]
    width = 34
    for pipeline in pipelines or list(PIPELINES):
        overrides = getattr(cfg.pipeline, pipeline)
        lines.append(f"== {pipeline} ({PIPELINE_CLASSES[pipeline]}) " + "=" * 40)
        lines.append(f"    {'parameter':<{width}} {'jwst default':<14} {'survey':<14} description")
        n_header = len(lines)
        for step, params in step_parameters(pipeline).items():
            survey = overrides.get(step, {}) or {}
            from_crds = crds.get((pipeline, step), {})
            shown = [p for p in params if p.name not in COMMON or p.name == "skip"]
            if changed_only:
                shown = [p for p in shown if p.name in survey
                         or (p.name in from_crds and from_crds[p.name] != p.default)]
                if not shown:
                    continue
            refs = [p.name[len("override_"):] for p in params if p.name.startswith("override_")]
            ref_text = f"; reference files: {', '.join(refs)}" if refs else ""
            lines.append(f"-- {step} ({step_class_name(pipeline, step)}{ref_text})")
            for p in shown:
                if p.name.startswith("override_"):
                    continue
                mark, value = " ", ""
                if p.name in from_crds and from_crds[p.name] != p.default:
                    mark, value = "c", f"{format_value(from_crds[p.name])} (crds)"
                if p.name in survey:
                    mark, value = "*", format_value(survey[p.name])
                lines.append(f"  {mark} {p.name:<{width}} {format_value(p.default):<14} {value:<14} {p.comment}".rstrip())
                note = NOTES.get((pipeline, step, p.name))
                if note:
                    lines.append(f"    {'':<{width}} why: {note}{_dynamic_hint(cfg, pipeline, step, p.name)}")
        if len(lines) == n_header:
            lines.append("    (every parameter at jwst's default)")
        lines.append("")
    return "\n".join(lines)
