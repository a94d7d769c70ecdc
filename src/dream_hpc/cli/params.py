"""`dream-hpc params`: every step parameter, jwst's default beside this survey's value."""

from __future__ import annotations

import argparse

from dream_hpc.config import PIPELINES, ConfigError
from dream_hpc.stages.params import crds_parameters, render, validate_step_overrides


def _cmd_params(args: argparse.Namespace) -> int:
    from dream_hpc.config import defaults_yaml, load_config

    if args.defaults:
        print(defaults_yaml(), end="")
        return 0
    if not args.config:
        raise ConfigError("params: name a survey config (e.g. config/demo.yaml), or use --defaults")
    cfg = load_config(args.config)
    validate_step_overrides(cfg)
    crds, note = ({}, "") if args.no_crds else crds_parameters(cfg)
    pipelines = [args.pipeline] if args.pipeline else None
    print(render(cfg, pipelines, changed_only=args.changed, crds=crds, crds_note=note))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="every step parameter of Detector1/Image2/Image3: jwst default vs the survey's",
                       description="Print every step parameter of the three pipelines from stpipe's spec, "
                       "jwst's default beside the survey's value, with notes on the ones that matter most "
                       "for NIRCam imaging; reject misspelt steps or parameters in the config.")
    p.add_argument("config", nargs="?", help="survey config (YAML)")
    p.add_argument("--defaults", action="store_true", help="print dream-hpc's config defaults (YAML) instead")
    p.add_argument("--pipeline", choices=PIPELINES, help="only this pipeline")
    p.add_argument("--changed", action="store_true", help="only parameters the survey or CRDS sets")
    p.add_argument("--no-crds", action="store_true", help="do not look up pars-* references in the pinned context")
    p.set_defaults(func=_cmd_params)
