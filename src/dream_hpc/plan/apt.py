"""APT exports (.xml + .pointing) read the way Mirage's yaml generator reads them, without importing Mirage.

Mirage (`mirage.apt.read_apt_xml.ReadAPTXML.read_xml`, `generate_observationlist.expand_for_dithers`
and `apt_inputs.AptInput.get_pointing_info`) turns the .xml into one row per filter configuration,
repeats the rows per mosaic tile and then per dither, and pairs them in order with the science
lines of the .pointing file, whose RA/Dec is the target and V2/V3 where the target lands in the
telescope frame. This module does the same for NIRCam imaging templates. Importing Mirage is avoided
on purpose: at import it reconfigures the root logger (DEBUG to stdout) and opens
`mirage_latest.log` in the current directory. tests/plan/test_plan.py checks the two readers agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

APT_NS = "{http://www.stsci.edu/JWST/APT}"
IMAGING_TEMPLATES = ("NircamImaging", "NircamEngineeringImaging")


class AptError(ValueError):
    """An APT export we cannot use, as one line naming the file and the fix."""


@dataclass
class AptExposure:
    """One exposure (one dither of one filter configuration in one visit) from the APT exports."""

    program: str
    observation: int
    visit: int
    filter_config: int  # 0-based index of the FilterConfig within the observation's template
    short_filter: str
    short_pupil: str
    long_filter: str
    long_pupil: str
    readpatt: str
    ngroups: int
    nints: int
    subarray: str
    module: str
    target_ra: float  # deg: the target, placed at (v2, v3)
    target_dec: float
    v2: float  # arcsec
    v3: float
    dither_x: float  # arcsec, the dither offset in the ideal frame (DithX, DithY)
    dither_y: float
    aperture: str  # the pointing reference aperture, e.g. NRCBS_FULL


def _split_pupil(value: str) -> tuple[str, str]:
    """'F164N+F150W2' -> (pupil, filter) as Mirage's `separate_pupil_and_filter`; wide filters -> CLEAR."""
    if "+" in value:
        pupil, filt = (s.strip() for s in value.split("+"))
        return pupil, filt
    return "CLEAR", value.strip()


def read_xml(path: str | Path) -> tuple[str, list[dict]]:
    """(program, rows): one row per (observation, tile, filter configuration, dither), Mirage's order."""
    from xml.etree import ElementTree

    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as e:
        raise AptError(f"pointings.apt.xml: {path} is not a readable APT .xml export ({e})") from None
    prop = root.find(f"{APT_NS}ProposalInformation")
    pid = prop.findtext(f"{APT_NS}ProposalID") if prop is not None else None
    program = f"{int(pid):05d}" if pid and pid.strip().isdigit() else ""
    rows: list[dict] = []
    for obs in root.iter(f"{APT_NS}Observation"):
        number = int(obs.findtext(f"{APT_NS}Number", "0"))
        template = obs.find(f"{APT_NS}Template")
        if template is None or len(template) == 0:
            continue
        tmpl = template[0]
        name = tmpl.tag.split("}")[-1]
        if name not in IMAGING_TEMPLATES:
            continue  # Mirage skips what it cannot simulate; so do we (and their pointing lines)
        ns = tmpl.tag.split("}")[0] + "}"
        fields = {child.tag.split("}")[-1]: (child.text or "").strip() for child in tmpl}
        primary = fields.get("PrimaryDithers", "1") or "1"
        primary = int(primary) if primary.isdigit() else int(primary[0]) if primary[:1].isdigit() else 1
        subpix = 1
        if fields.get("SubpixelDitherType", "") in ("STANDARD", "IMAGING", "SMALL-GRID-DITHER"):
            subpix = int(fields.get("SubpixelPositions", "1") or 1)
        n_dithers = primary * subpix
        configs = []
        for i, fc in enumerate(tmpl.iter(f"{ns}FilterConfig")):
            get = {c.tag.split("}")[-1]: (c.text or "").strip() for c in fc}
            sp, sf = _split_pupil(get.get("ShortFilter", ""))
            lp, lf = _split_pupil(get.get("LongFilter", ""))
            configs.append({"observation": number, "filter_config": i, "short_filter": sf, "short_pupil": sp,
                            "long_filter": lf, "long_pupil": lp, "readpatt": get.get("ReadoutPattern", ""),
                            "ngroups": int(get.get("Groups", "0") or 0),
                            "nints": int(get.get("Integrations", "1") or 1),
                            "subarray": fields.get("Subarray", "FULL"), "module": fields.get("Module", "ALL")})
        tiles = [t.findtext(f".//{APT_NS}TileState") for t in obs.iter(f"{APT_NS}MosaicTiles")]
        n_tiles = max(1, sum(1 for s in tiles if s == "Tile Included"))
        for _tile in range(n_tiles):
            for cfg in configs:
                rows.extend(dict(cfg) for _ in range(n_dithers))
    return program, rows


def read_pointing(path: str | Path) -> list[dict]:
    """NIRCam science lines of an APT .pointing export (columns as Mirage's `get_pointing_info`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise AptError(f"pointings.apt.pointing: {path} cannot be read ({e.strerror})") from None
    obs = visit = 0
    rows: list[dict] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or "=====" in line:
            continue
        parts = line.split()
        if parts[0] == "Glossary":
            break
        if line.startswith("**"):
            m = re.search(r"(\d+):(\d+)", line)
            if m:
                obs, visit = int(m.group(1)), int(m.group(2))
            continue
        try:
            tile = int(parts[1])
            if tile <= 0 or "NRC" not in parts[4]:
                continue
            rows.append({"observation": obs, "visit": visit, "tile": tile, "exp": int(parts[2]),
                         "dith": int(parts[3]), "aperture": parts[4], "ra": float(parts[7]),
                         "dec": float(parts[8]), "dithx": float(parts[11]), "dithy": float(parts[12]),
                         "v2": float(parts[13]), "v3": float(parts[14])})
        except (ValueError, IndexError):
            continue  # headers and non-exposure lines, as Mirage
    return rows


def read_apt(xml: str | Path, pointing: str | Path, default_program: str) -> list[AptExposure]:
    """Pair the .xml rows with the .pointing lines observation by observation; one line on mismatch."""
    program, xml_rows = read_xml(xml)
    if not xml_rows:
        raise AptError(f"pointings.apt.xml: {xml} has no NIRCam imaging observation "
                       f"({'/'.join(IMAGING_TEMPLATES)} templates are supported)")
    lines = read_pointing(pointing)
    out: list[AptExposure] = []
    for number in dict.fromkeys(r["observation"] for r in xml_rows):
        xr = [r for r in xml_rows if r["observation"] == number]
        pr = [p for p in lines if p["observation"] == number]
        if len(xr) != len(pr):
            raise AptError(f"pointings.apt: observation {number} has {len(xr)} exposures in {Path(xml).name} but "
                           f"{len(pr)} in {Path(pointing).name} (export both files from the same APT proposal)")
        for x, p in zip(xr, pr, strict=True):
            out.append(AptExposure(
                program=program or default_program, observation=number, visit=p["visit"],
                filter_config=x["filter_config"], short_filter=x["short_filter"], short_pupil=x["short_pupil"],
                long_filter=x["long_filter"], long_pupil=x["long_pupil"], readpatt=x["readpatt"],
                ngroups=x["ngroups"], nints=x["nints"], subarray=x["subarray"], module=x["module"],
                target_ra=p["ra"], target_dec=p["dec"], v2=p["v2"], v3=p["v3"],
                dither_x=p["dithx"], dither_y=p["dithy"], aperture=p["aperture"]))
    return out
