"""The CRDS cache layout: pmap -> imap -> rmaps with valid checksums, and the cache config.

jwst 3 reads it unchanged with CRDS_MODE=local, CRDS_PATH=<kit>/crds_cache and
CRDS_CONTEXT=<CONTEXT>, serverless and read-only. The imap names every reference type the
Detector1, Image2 and Image3 pipelines ask for (taken from the pipeline classes themselves), each
as an rmap or N/A; the step-parameter types (pars-*) are N/A, so CRDS logs no errors and the steps
use their defaults.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dream_hpc.refkit import CONTEXT  # the one place the context name is set
from dream_hpc.refkit.crds_refs import USEAFTER, RefFile

SERIAL = CONTEXT.removeprefix("jwst_").removesuffix(".pmap")  # every mapping shares it
IMAP = f"jwst_nircam_{SERIAL}.imap"
DETECTOR_KEY = "META.INSTRUMENT.DETECTOR"
# Match parkeys per reference type (anything not listed selects on the detector only).
PARKEYS: dict[str, tuple[str, ...]] = {
    "dark": (DETECTOR_KEY, "META.EXPOSURE.READPATT", "META.SUBARRAY.NAME"),
    "flat": (DETECTOR_KEY, "META.INSTRUMENT.FILTER", "META.INSTRUMENT.PUPIL"),
    # one table with a row per filter; an Image3 mosaic may have DETECTOR=MULTIPLE
    "apcorr": ("META.EXPOSURE.TYPE",),
    "abvegaoffset": ("META.EXPOSURE.TYPE",),
}
USEAFTER_KEYS = ("META.OBSERVATION.DATE", "META.OBSERVATION.TIME")
SERVER_CONFIG_KEYS = ("observatory", "operational_context", "bad_files_list", "force_remote_mode", "last_synced")


def pipeline_reftypes() -> list[str]:
    """Every reference type (including pars-*) the three imaging pipelines and their steps request."""
    from jwst.pipeline import Detector1Pipeline, Image2Pipeline, Image3Pipeline

    types: set[str] = set()
    for pipeline in (Detector1Pipeline, Image2Pipeline, Image3Pipeline):
        types.add(pipeline.get_config_reftype())
        for step in pipeline.step_defs.values():
            types.update(step.reference_file_types)
            types.add(step.get_config_reftype())
    return sorted(types)


def with_checksum(text: str) -> str:
    """Fill '@SHA1@' with CRDS's checksum: sha1 of the text without lines containing 'sha1sum'."""
    body = "".join(line for line in text.splitlines(True) if "sha1sum" not in line)
    return text.replace("@SHA1@", hashlib.sha1(body.encode("utf-8")).hexdigest())


def _key(values: tuple[str, ...]) -> str:
    return repr(values[0]) if len(values) == 1 else repr(tuple(values))


def rmap_text(reftype: str, refs: list[RefFile]) -> str:
    parkeys = PARKEYS.get(reftype, (DETECTOR_KEY,))
    useafter = USEAFTER.replace("T", " ")
    entries = "".join(f"    {_key(r.match)} : UseAfter({{\n        '{useafter}' : '{r.path.name}',\n    }}),\n"
                      for r in sorted(refs, key=lambda r: r.match))
    return with_checksum(f"""header = {{
    'classes' : ('Match', 'UseAfter'),
    'derived_from' : 'dream-hpc refkit (synthetic)',
    'filekind' : '{reftype.upper()}',
    'instrument' : 'NIRCAM',
    'mapping' : 'REFERENCE',
    'name' : 'jwst_nircam_{reftype}_{SERIAL}.rmap',
    'observatory' : 'JWST',
    'parkey' : ({parkeys!r}, {USEAFTER_KEYS!r}),
    'sha1sum' : '@SHA1@',
}}

selector = Match({{
{entries}}})
""")


def imap_text(selector: dict[str, str]) -> str:
    lines = "".join(f"    '{k}' : '{v}',\n" for k, v in sorted(selector.items()))
    return with_checksum(f"""header = {{
    'derived_from' : 'dream-hpc refkit (synthetic)',
    'instrument' : 'NIRCAM',
    'mapping' : 'INSTRUMENT',
    'name' : '{IMAP}',
    'observatory' : 'JWST',
    'parkey' : ('REFTYPE',),
    'sha1sum' : '@SHA1@',
}}

selector = {{
{lines}}}
""")


def pmap_text() -> str:
    return with_checksum(f"""header = {{
    'derived_from' : 'dream-hpc refkit (synthetic)',
    'mapping' : 'PIPELINE',
    'name' : '{CONTEXT}',
    'observatory' : 'JWST',
    'parkey' : ('META.INSTRUMENT.NAME',),
    'sha1sum' : '@SHA1@',
}}

selector = {{
    'NIRCAM' : '{IMAP}',
}}
""")


def server_config(mappings: list[str]) -> str:
    """What CRDS would have cached from the server; all five SERVER_CONFIG_KEYS are required."""
    info = {
        "observatory": "jwst",
        "operational_context": CONTEXT,
        "edit_context": CONTEXT,
        "versions_context": CONTEXT,
        "bad_files": "",
        "bad_files_list": [],
        "force_remote_mode": False,
        "last_synced": "2024-01-01 00:00:00",  # fixed: same bytes every build
        "mappings": mappings,
        "download_metadata": "",
    }
    return repr(info) + "\n"


def write_cache(root: Path, refs: list[RefFile], reftypes: list[str]) -> dict[str, str]:
    """Write mappings and config for `refs` under `root` (references already in place).

    Returns the imap selector {reftype: rmap name | 'N/A'}."""
    mapdir = root / "mappings" / "jwst"
    cfgdir = root / "config" / "jwst"
    mapdir.mkdir(parents=True, exist_ok=True)
    cfgdir.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[RefFile]] = {}
    for r in refs:
        by_type.setdefault(r.reftype, []).append(r)
    missing = sorted(set(by_type) - set(reftypes))
    if missing:  # a reference no pipeline asks for: the list of types and the writer disagree
        raise RuntimeError(f"references written for types the pipelines do not request: {missing}")
    selector = {t: "N/A" for t in reftypes}
    for reftype, group in sorted(by_type.items()):
        name = f"jwst_nircam_{reftype}_{SERIAL}.rmap"
        (mapdir / name).write_text(rmap_text(reftype, group))
        selector[reftype] = name
    (mapdir / IMAP).write_text(imap_text(selector))
    (mapdir / CONTEXT).write_text(pmap_text())
    (cfgdir / "server_config").write_text(server_config(sorted(p.name for p in mapdir.iterdir())))
    (cfgdir / "ref_cache_subdir_mode").write_text("instrument")
    return selector


def check_mappings(root: Path) -> None:
    """Parse every mapping with CRDS's own parser, checksums enforced (no CRDS environment needed)."""
    from crds.core import rmap

    for path in sorted((root / "mappings" / "jwst").iterdir()):
        rmap.Mapping.from_string(path.read_text(), path.name, ignore_checksum=False)
