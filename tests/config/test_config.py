"""Config validation: every mistake is one line naming the key and the fix, before any compute."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _cache_fixtures import ROOT, run_cli

from dream_hpc.config import ConfigError, SurveyConfig, defaults, defaults_yaml, load_config, parse_config

BAD_CONFIGS = {  # id: (YAML text, what the single error line must contain)
    "unknown_top_key": ("instrumnet:\n  subarray: SUB160\n", ["instrumnet", "unknown key", "did you mean 'instrument'"]),
    "unknown_nested_key": ("instrument:\n  detectrs: [NRCB1]\n",
                           ["instrument.detectrs", "did you mean 'detectors'"]),
    "wrong_type_int": ("instrument:\n  readout:\n    ngroups: four\n",
                       ["instrument.readout.ngroups", "expected a whole number", "'four'"]),
    "wrong_type_bool": ("simulation:\n  cosmic_rays: sometimes\n", ["simulation.cosmic_rays", "true or false"]),
    "bool_is_not_a_number": ("instrument:\n  readout:\n    nints: true\n", ["instrument.readout.nints"]),
    "lw_filter_in_sw_slot": ("instrument:\n  filter_pairs: [[F277W, F150W]]\n",
                             ["instrument.filter_pairs[0]", "F277W", "long-wave filter in the short-wave slot"]),
    "sw_filter_in_lw_slot": ("instrument:\n  filter_pairs: [[F150W, F200W]]\n",
                             ["instrument.filter_pairs[0]", "F200W", "short-wave filter in the long-wave slot"]),
    "unquoted_program_id": ("survey:\n  program: 01234\n", ["survey.program", "quote it"]),
    "unknown_detector": ("instrument:\n  detectors: [NRCB6]\n", ["instrument.detectors[0]", "NRCB6"]),
    "point_source_subarray_on_wrong_detector": ("instrument:\n  detectors: [NRCB1, NRCB2]\n  subarray: SUB400P\n",
                                                ["instrument.subarray", "SUB400P", "NRCB2"]),
    "unknown_readpatt": ("instrument:\n  readout:\n    readpatt: FAST\n", ["instrument.readout.readpatt", "FAST"]),
    "bad_context": ("references:\n  context: jwst_latest\n", ["references.context", "jwst_NNNN.pmap"]),
    "malformed_yaml": ("survey:\n  name: demo\n   seed: 3\n", ["not valid YAML at line 3", "fix the syntax"]),
    "unclosed_bracket": ("instrument:\n  detectors: [NRCB1, NRCB5\n", ["not valid YAML"]),
    "top_level_list": ("- survey\n- instrument\n", ["mapping of sections"]),
    "step_params_not_mapping": ("pipeline:\n  image3:\n    tweakreg: 5\n", ["pipeline.image3.tweakreg"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_the_key(case: str, tmp_path: Path) -> None:
    text, expected = BAD_CONFIGS[case]
    path = tmp_path / "survey.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text("instrument:\n  detectrs: [NRCB1]\n")
    done = run_cli("params", str(path), "--no-crds")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "instrument.detectrs" in lines[0] and "did you mean 'detectors'" in lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_defaults_round_trip() -> None:
    text = defaults_yaml()
    again = parse_config(text)
    assert again == defaults() == SurveyConfig()
    assert yaml.safe_dump(again.to_dict(), sort_keys=False) == text
    # `dream-hpc params --defaults` prints exactly the same defaults
    done = run_cli("params", "--defaults")
    assert done.returncode == 0 and parse_config(done.stdout) == defaults()


def test_partial_config_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text("instrument:\n  readout:\n    ngroups: 6\n")
    cfg = load_config(path)
    assert cfg.instrument.readout.ngroups == 6
    assert cfg.instrument.readout.readpatt == SurveyConfig().instrument.readout.readpatt
    assert cfg.instrument.detectors == SurveyConfig().instrument.detectors
    assert cfg.resolve("catalog.ecsv") == tmp_path / "catalog.ecsv"  # relative to the config file


# --- step overrides (pipeline.<pipeline>.<step>.<param>), checked against jwst's own step specs ---
STEP_ERRORS = {
    "misspelt_parameter": ({"image3": {"tweakreg": {"minobjj": 4}}},
                           ["pipeline.image3.tweakreg.minobjj", "did you mean 'minobj'"]),
    "misspelt_step": ({"image3": {"tweakrg": {"minobj": 4}}}, ["pipeline.image3.tweakrg", "did you mean 'tweakreg'"]),
    "step_of_another_pipeline": ({"detector1": {"tweakreg": {"minobj": 4}}},
                                 ["pipeline.detector1.tweakreg", "not a step of Detector1Pipeline"]),
    "wrong_value_type": ({"detector1": {"jump": {"rejection_threshold": "high"}}},
                         ["pipeline.detector1.jump.rejection_threshold", "'high'", "float"]),
    "not_an_option": ({"image3": {"tweakreg": {"fitgeometry": "affine"}}},
                      ["pipeline.image3.tweakreg.fitgeometry", "'affine'"]),
    "managed_by_dream_hpc": ({"image2": {"photom": {"output_dir": "/tmp"}}},
                             ["pipeline.image2.photom.output_dir", "set by dream-hpc"]),
    "reference_override": ({"detector1": {"dark_current": {"override_dark": "my_dark.fits"}}},
                           ["pipeline.detector1.dark_current.override_dark", "pinned CRDS context"]),
}


def _cfg_with(pipeline: dict, tmp_path: Path) -> SurveyConfig:
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump({"pipeline": pipeline}))
    return load_config(path)


@pytest.mark.parametrize("case", sorted(STEP_ERRORS))
def test_step_override_errors(case: str, tmp_path: Path) -> None:
    from dream_hpc.stages.params import validate_step_overrides

    pipeline, expected = STEP_ERRORS[case]
    cfg = _cfg_with(pipeline, tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_step_overrides(cfg)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "survey.yaml"))
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_valid_step_overrides_pass(tmp_path: Path) -> None:
    from dream_hpc.stages.params import validate_step_overrides

    cfg = _cfg_with({"detector1": {"jump": {"rejection_threshold": 5.0, "maximum_cores": "1"},
                                   "clean_flicker_noise": {"skip": False, "fit_method": "fft"}},
                     "image3": {"tweakreg": {"minobj": 4, "abs_refcat": ""},
                                "resample": {"pixfrac": 0.8, "pixel_scale": 0.03}}}, tmp_path)
    validate_step_overrides(cfg)  # accepted, and each one reaches the table as this survey's value:
    from dream_hpc.stages.params import render

    changed = render(cfg, changed_only=True)
    for name, value in (("rejection_threshold", "5.0"), ("fit_method", "fft"), ("minobj", "4"), ("pixfrac", "0.8")):
        line = next((ln for ln in changed.splitlines() if ln.strip().lstrip("* ").startswith(name + " ")), "")
        assert value in line and "*" in line, f"{name}: override not shown as applied: {line!r}"
    # the same overrides with one misspelt parameter are refused, naming it
    bad = _cfg_with({"detector1": {"jump": {"rejection_treshold": 5.0}}}, tmp_path)
    with pytest.raises(ConfigError, match="rejection_treshold"):
        validate_step_overrides(bad)


@pytest.mark.parametrize("name", ["demo.yaml", "cosmos-web.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    from dream_hpc.plan.pointings import make_plan
    from dream_hpc.stages.params import validate_step_overrides

    cfg = load_config(ROOT / "config" / name)
    validate_step_overrides(cfg)
    units = make_plan(cfg)
    assert units and len({u.unit_id for u in units}) == len(units)
    if name == "demo.yaml":  # what its header promises: 1 x 2 tiles x 2 dithers x 2 detectors, FULL frames
        assert len(units) == 8 and {u.detector for u in units} == {"NRCB1", "NRCB5"}
        assert {u.subarray for u in units} == {"FULL"} and cfg.catalog.synth.star_density_arcmin2 <= 5.0


def test_params_table_shows_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {"image3": {"tweakreg": {"minobj": 4}}}}))
    done = run_cli("params", str(path), "--no-crds")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for header in ("== detector1", "== image2", "== image3", "-- jump (JumpStep", "-- source_catalog"):
        assert header in out
    row = next(line for line in out.splitlines() if line.split()[:2] == ["*", "minobj"])
    assert row.split()[2:4] == ["15", "4"]  # jwst default beside the survey's value
    assert "why:" in out and "rejection_threshold" in out
