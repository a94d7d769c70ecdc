"""The run report (RUN/report.html) of real runs, opened in headless Chromium.

The page of the session's small survey (written by `dream-hpc survey` itself, then again by
`dream-hpc report` on a copied run directory), of a rerun with an injected jwst-step failure
(DREAM_HPC_TEST_FAULT, engine/worker.py) and of a run caught while it is still running are each
checked in the file and in a real browser: the verdict is there, every image is a PNG data URI
that the browser decodes (naturalWidth > 0, checked on a test-only copy with a script appended:
the page itself has none), no request leaves the file (Chromium's net log; a control page with an
external image proves the check sees one), and the failures table names the injected failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _chain_fixtures import ROOT, SurveyRun, cli
from _engine_fixtures import engine_env, wait_for

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (installed by scripts/install-sysdeps.sh, which `make test` runs)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run([str(ROOT / "scripts" / "install-sysdeps.sh"), "chromium"], capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium not installed and not installable here (run scripts/install-sysdeps.sh as root)")
    return found


def browse(chromium: str, page: Path, *args: str, net_log: Path | None = None) -> subprocess.CompletedProcess:
    """One headless Chromium run on `page` with a fresh profile (nothing cached, nothing signed in)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        if net_log:
            cmd.append(f"--log-net-log={net_log}")
        return subprocess.run([*cmd, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked the network for: URL requests keyed to the file:// site (Chromium's
    own background chatter, blocked by the resolver rule anyway, has no page origin)."""
    text = net_log.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short at exit: close its event list
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for ev in log["events"]:
        p = ev.get("params") or {}
        from_page = ("file://" in str(p.get("network_isolation_key", ""))
                     or p.get("initiator") not in (None, "not an origin"))
        if kinds.get(ev["type"]) == "URL_REQUEST_START_JOB" and "url" in p and from_page:
            urls.append(p["url"])
    return urls


class _Refs(HTMLParser):
    """Every img src, every URL-bearing attribute, and every script/link/iframe tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.urls: list[str] = []
        self.forbidden: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.forbidden.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for key in ("src", "href", "srcset", "poster", "data", "action"):
            if a.get(key):
                self.urls.append(a[key])


def check_self_contained(html: str) -> list[str]:
    """The page's images as data URIs, each a PNG that decodes; nothing referenced outside the file."""
    from PIL import Image

    refs = _Refs()
    refs.feed(html)
    assert not refs.forbidden, f"external-capable tags in the page: {refs.forbidden}"
    assert refs.imgs, "the page shows no image"
    for src in refs.imgs:
        head, _, payload = src.partition(",")
        assert head == "data:image/png;base64", f"image not embedded as a PNG data URI: {src[:80]}"
        png = base64.b64decode(payload, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            assert im.width > 0 and im.height > 0
    for url in refs.urls:
        assert url.startswith(("#", "data:")), f"the page references {url[:80]}"
    # nor in CSS (url(...), @import) or anywhere in the text as a fetchable scheme
    assert not re.search(r"url\(|@import", html), "CSS that could fetch something"
    return refs.imgs


def check_in_browser(chromium: str, page: Path, tmp: Path) -> str:
    """Screenshot, DOM, decoded images and requests of `page` in Chromium; returns the dumped DOM."""
    shot = tmp / f"{page.parent.name}-screenshot.png"
    done = browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    net_log = tmp / f"{page.parent.name}-net.json"
    dom = browse(chromium, page, "--dump-dom", "--virtual-time-budget=5000", net_log=net_log)
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    assert page_requests(net_log) == [], f"the page made network requests: {page_requests(net_log)}"
    # Decoded in the browser: a test-only copy with a script that records broken images in the DOM.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
      addEventListener("load", () => {
        const imgs = [...document.images];
        document.body.dataset.images = imgs.length;
        document.body.dataset.broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
      });</script></body>"""))
    probed = browse(chromium, probe, "--dump-dom", "--virtual-time-budget=5000").stdout
    probe.unlink()
    n_imgs = page.read_text().count("<img ")
    assert f'data-images="{n_imgs}"' in probed and 'data-broken="0"' in probed, re.findall(r"<body[^>]*>", probed)
    return dom.stdout


def test_net_log_check_sees_an_external_request(chromium: str, tmp_path: Path) -> None:
    """The no-network check can fail: a page with an external image and stylesheet is caught."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png">'
                    '<link rel="stylesheet" href="https://fonts.example.invalid/a.css"></body></html>')
    net_log = tmp_path / "net.json"
    browse(chromium, page, "--dump-dom", "--virtual-time-budget=3000", net_log=net_log)
    assert sorted(page_requests(net_log)) == ["http://example.invalid/x.png", "https://fonts.example.invalid/a.css"]
    with pytest.raises(AssertionError):
        check_self_contained(page.read_text())


def test_report_of_the_survey_opens_offline(chain_run: SurveyRun, chromium: str, tmp_path: Path) -> None:
    """`dream-hpc survey` wrote RUN/report.html; `dream-hpc report` on a copied run directory writes it
    again and the page shows the verdict, the mosaic with its science check, and the provenance."""
    assert chain_run.proc.returncode == 0, chain_run.proc.stdout + chain_run.proc.stderr
    assert (chain_run.run / "report.html").is_file(), "survey did not write its report"
    assert f"report: {chain_run.run / 'report.html'}" in chain_run.proc.stdout
    run = tmp_path / "copied-run"
    shutil.copytree(chain_run.run, run)
    (run / "report.html").unlink()
    proc = cli(["report", str(run)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = run / "report.html"
    html = page.read_text()
    imgs = check_self_contained(html)
    # footprint, timeline, distributions, F150W preview, completeness curve, residuals
    assert len(imgs) >= 6, len(imgs)
    assert page.stat().st_size < 3e6, page.stat().st_size
    dom = check_in_browser(chromium, page, tmp_path)
    assert re.search(r'id="verdict-headline">\s*GOOD', dom), re.findall(r'id="verdict-headline">[^<]*', dom)
    assert "IN PROGRESS" not in dom and "No unit or mosaic failed" in dom
    assert "F150W:" in dom and "science check passed" in dom
    assert 'alt="F150W completeness vs magnitude"' in dom and 'alt="F150W mosaic preview"' in dom
    assert "dream-hpc reproduce" in dom and "provenance.h5" in dom
    assert "audit" in dom and ">OK<" in dom
    # the step parameters the survey overrides (config/demo.yaml: tweakreg minobj 5, default 15)
    assert re.search(r"minobj</td>\s*<td[^>]*>15</td>\s*<td[^>]*><b>5</b>", dom)


def _first_unit(run: Path) -> str:
    return json.loads((run / "plan.json").read_text())["units"][0]["unit_id"]


def test_report_lists_an_injected_failure(chain_run: SurveyRun, chromium: str, tmp_path: Path) -> None:
    """A rerun where one unit's Image2 photom step raises: survey's own report says NEEDS ATTENTION and
    its failures table names the unit, stage, jwst step and error, linked to the log's tail."""
    run = tmp_path / "failing-run"
    shutil.copytree(chain_run.run, run)
    bad = _first_unit(run)
    (run / "exposures" / f"{bad}_cal.fits").unlink()  # so the rerun redoes its Image2
    proc = cli(["survey", str(chain_run.config), "--out", str(run)],
               env={"DREAM_HPC_TEST_FAULT": f"{bad}:image2:photom:raise"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    page = run / "report.html"
    check_self_contained(page.read_text())
    dom = check_in_browser(chromium, page, tmp_path)
    assert re.search(r'id="verdict-headline">\s*NEEDS ATTENTION', dom)
    table = dom.split('id="failures-table"', 1)[1].split("</table>", 1)[0]
    row = next(r for r in table.split("<tr>") if bad in r)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[:4] == [bad, "failed", "image2", "photom"], cells
    assert "injected test fault" in cells[4]
    anchor = re.search(r'href="#([^"]+)"', row).group(1)
    excerpt = dom.split(f'id="{anchor}"', 1)[1].split("</pre>", 1)[0]
    assert "injected test fault" in excerpt and "Traceback" in excerpt
    assert "mosaic F150W" in table  # blocked: its input failed (allow_partial_mosaic is false)


def test_report_of_a_run_in_progress(chain_run: SurveyRun, chromium: str, tmp_path: Path) -> None:
    """While `dream-hpc run` is busy (one unit held in Image2 by the test hook), `dream-hpc report`
    renders what the journal holds so far and says at the top that the run is in progress."""
    run = tmp_path / "live-run"
    shutil.copytree(chain_run.run, run)
    (run / "report.html").unlink()
    held = _first_unit(run)
    (run / "exposures" / f"{held}_cal.fits").unlink()
    proc = subprocess.Popen([sys.executable, "-m", "dream_hpc", "run", str(chain_run.config), "--out", str(run),
                             "--no-mosaic"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=engine_env(DREAM_HPC_TEST_FAULT=f"{held}:image2:hang"), start_new_session=True)
    try:
        from dream_hpc.core.rundir import RunDir
        from dream_hpc.core.runstate import read_run

        wait_for(lambda: read_run(RunDir(run)).units[held].status == "running", 300, f"{held} to start")
        done = cli(["report", str(run)])
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    page = run / "report.html"
    check_self_contained(page.read_text())
    dom = check_in_browser(chromium, page, tmp_path)
    assert 'id="in-progress"' in dom and "IN PROGRESS: ranks are still writing the journal" in dom
    assert re.search(r'id="verdict-headline">\s*IN PROGRESS', dom)
    assert re.search(r"running / pending<b>1 / 0</b>", dom)
    assert "the run is in progress; audit it when it has ended" in dom
