"""W3C PROV-JSON export of a run's provenance (https://www.w3.org/submissions/prov-json/).

Entities: products, inputs, reference files and the config; activities: unit stages and mosaics;
agents: dream-hpc, jwst and Mirage (with versions) and the hosts; relations: used,
wasGeneratedBy, wasDerivedFrom, wasAssociatedWith. `validate` checks the document is what
PROV-JSON tools expect (known top-level keys, declared prefixes, relations naming declared ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dream_hpc.core.rundir import atomic_write_text

TOP_LEVEL_KEYS = ("prefix", "entity", "activity", "agent", "wasGeneratedBy", "used", "wasInformedBy",
                  "wasStartedBy", "wasEndedBy", "wasInvalidatedBy", "wasDerivedFrom", "wasAttributedTo",
                  "wasAssociatedWith", "actedOnBehalfOf", "wasInfluencedBy", "specializationOf",
                  "alternateOf", "hadMember", "mentionOf", "bundle")
# relation -> (its required key and kind, its other id keys and kinds)
RELATIONS = {
    "used": (("prov:activity", "activity"), [("prov:entity", "entity")]),
    "wasGeneratedBy": (("prov:entity", "entity"), [("prov:activity", "activity")]),
    "wasDerivedFrom": (("prov:generatedEntity", "entity"), [("prov:usedEntity", "entity"),
                                                             ("prov:activity", "activity")]),
    "wasAssociatedWith": (("prov:activity", "activity"), [("prov:agent", "agent")]),
}
BUILTIN_PREFIXES = ("prov", "xsd", "_")
NS = "https://dream-hpc.readthedocs.io/ns/provenance#"
# Which software did the work of a stage
STAGE_SOFTWARE = {"simulate": "mirage", "detector1": "jwst", "image2": "jwst", "image3": "jwst"}


def _ref_local(name: str) -> str:
    return name.removeprefix("crds://")


def _typed(value: Any, xsd: str) -> dict[str, str]:
    return {"$": str(value), "type": f"xsd:{xsd}"}


def build(view: dict[str, Any]) -> dict[str, Any]:
    """The PROV-JSON document of a loaded provenance.h5 (prov_read.load)."""
    r, packages = view["run"], view["packages"]
    digest = view["root"].get("journal_digest", "")
    doc: dict[str, Any] = {
        "prefix": {"dream": NS, "run": f"urn:dream-hpc:run:{digest}:", "crds": "crds://",
                   "sw": "urn:dream-hpc:software:", "host": "urn:dream-hpc:host:"},
        "entity": {}, "activity": {}, "agent": {},
        "used": {}, "wasGeneratedBy": {}, "wasDerivedFrom": {}, "wasAssociatedWith": {},
    }
    n = {"u": 0, "g": 0, "d": 0, "a": 0}

    def relation(kind: str, prefix: str, body: dict[str, str]) -> None:
        n[prefix] += 1
        doc[kind][f"_:{prefix}{n[prefix]}"] = body

    software = {"dream-hpc": (r.get("dream_hpc_version", ""), {"dream:git_commit": r.get("dream_hpc_git_commit", "")}),
                "jwst": (packages.get("jwst", ""), {}), "mirage": (packages.get("mirage", ""), {})}
    agents = {}
    for name, (version, extra) in software.items():
        agents[name] = f"sw:{name}-{version or 'unknown'}"
        doc["agent"][agents[name]] = {"prov:type": "prov:SoftwareAgent", "prov:label": name,
                                      "dream:version": version} | extra
    config_id = "run:config.yaml"
    doc["entity"][config_id] = {"prov:type": "dream:Config", "dream:sha256": r.get("config_sha256", ""),
                                "dream:crds_context": r.get("crds_context", "")}

    def entity(rel: str, sha: str, kind: str) -> str:
        eid = f"run:{rel}"
        doc["entity"].setdefault(eid, {"prov:type": kind, "prov:label": Path(rel).name, "dream:sha256": sha})
        return eid

    produced = set()
    for st in _stages(view):
        for rel in st[2]["outputs"]:
            produced.add(rel)
    for aid, stage, st in _stages(view):
        a = st["attrs"]
        act: dict[str, Any] = {"prov:type": f"dream:{stage}", "dream:status": a.get("status", ""),
                               "dream:params": json.dumps(st["params"], sort_keys=True)}
        if a.get("start"):
            act["prov:startTime"] = a["start"]
        if a.get("end"):
            act["prov:endTime"] = a["end"]
        for key in ("wall_s", "cpu_s", "peak_rss_mb"):
            if isinstance(a.get(key), int | float):
                act[f"dream:{key}"] = _typed(a[key], "double")
        if a.get("error"):
            act["dream:error"] = a["error"]
        if st["seeds"]:
            act["dream:seeds"] = json.dumps(st["seeds"], sort_keys=True)
        if st.get("asn") is not None:
            act["dream:association"] = json.dumps(st["asn"], sort_keys=True)
        doc["activity"][aid] = act
        relation("used", "u", {"prov:activity": aid, "prov:entity": config_id})
        used = []
        for rel, sha in sorted(st["inputs"].items()):
            eid = entity(rel, sha, "dream:Product" if rel in produced else "dream:Input")
            used.append(eid)
            relation("used", "u", {"prov:activity": aid, "prov:entity": eid})
        for reftype, (name, sha) in sorted(st["refs"].items()):
            if not name or name.upper() == "N/A":
                continue
            eid = f"crds:{_ref_local(name)}"
            doc["entity"].setdefault(eid, {"prov:type": "dream:ReferenceFile", "prov:label": _ref_local(name),
                                           "dream:reftype": reftype, "dream:sha256": sha})
            relation("used", "u", {"prov:activity": aid, "prov:entity": eid})
        for rel, sha in sorted(st["outputs"].items()):
            eid = entity(rel, sha, "dream:Product")
            relation("wasGeneratedBy", "g", {"prov:entity": eid, "prov:activity": aid})
            for src in used:
                relation("wasDerivedFrom", "d", {"prov:generatedEntity": eid, "prov:usedEntity": src,
                                                 "prov:activity": aid})
        relation("wasAssociatedWith", "a", {"prov:activity": aid, "prov:agent": agents["dream-hpc"]})
        relation("wasAssociatedWith", "a", {"prov:activity": aid, "prov:agent": agents[STAGE_SOFTWARE.get(stage, "jwst")]})
        if a.get("host"):
            hid = f"host:{a['host']}"
            doc["agent"].setdefault(hid, {"prov:type": "dream:Host", "prov:label": a["host"]})
            relation("wasAssociatedWith", "a", {"prov:activity": aid, "prov:agent": hid})
    return doc


def _stages(view: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = [(f"run:unit/{uid}/{stage}", stage, st) for uid, u in view["units"].items()
           for stage, st in u["stages"].items()]
    out += [(f"run:mosaic/{name}", "image3", st) for name, st in view["mosaics"].items()]
    return out


def validate(doc: Any) -> list[str]:
    """Problems that would stop a PROV-JSON reader (empty: well-formed)."""
    try:
        doc = json.loads(json.dumps(doc))
    except (TypeError, ValueError) as e:
        return [f"not JSON-serialisable: {e}"]
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    problems = [f"unknown top-level key {k!r}" for k in doc if k not in TOP_LEVEL_KEYS]
    prefixes = set(doc.get("prefix", {})) | set(BUILTIN_PREFIXES)
    ids: dict[str, set[str]] = {}
    for kind in ("entity", "activity", "agent"):
        records = doc.get(kind, {})
        if not isinstance(records, dict):
            problems.append(f"{kind}: not a mapping of id -> attributes")
            continue
        ids[kind] = set(records)
        for rid, attrs in records.items():
            if rid.partition(":")[0] not in prefixes or ":" not in rid:
                problems.append(f"{kind} {rid!r}: its prefix is not declared")
            if not isinstance(attrs, dict):
                problems.append(f"{kind} {rid!r}: attributes are not a mapping")
    for kind, ((req, req_kind), others) in RELATIONS.items():
        for rid, body in doc.get(kind, {}).items():
            if req not in body:
                problems.append(f"{kind} {rid}: required {req} is missing")
            for key, target in [(req, req_kind), *others]:
                if key in body and body[key] not in ids.get(target, set()):
                    problems.append(f"{kind} {rid}: {key} {body[key]!r} is not a declared {target}")
    return problems


def write_prov_json(view: dict[str, Any], path: str | Path) -> Path:
    """Write the PROV-JSON document (atomically) after validating it; raises ValueError if malformed."""
    doc = build(view)
    problems = validate(doc)
    if problems:
        raise ValueError(f"PROV-JSON export is malformed: {problems[0]}")
    path = Path(path)
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path
