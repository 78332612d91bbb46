"The offline docs site: it builds, documents every exported public symbol, and renders in headless Chromium\n(math typeset offline, figures loaded, grouped sidebar, search, the Fidelity page)."
import importlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from unimd.docsite import build_docs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_docs(tmp_path_factory.mktemp("docs")/"site", project_root=ROOT)


def _modules():
    for py in sorted((ROOT/"unimd").glob("*.py")):
        if py.stem.startswith("_"): continue
        src = py.read_text()
        nb = re.search(r"File to edit: \.\./nbs/(\S+)\.ipynb", src).group(1)
        yield importlib.import_module(f"unimd.{py.stem}"), nb


def test_every_notebook_has_a_page(site):
    pages = {p["notebook"] for p in json.loads((site/"pages.json").read_text())}
    assert pages == {p.name for p in (ROOT/"nbs").glob("*.ipynb")}
    assert (site/"index.html").exists() and (site/"style.css").exists()


def test_every_public_symbol_is_documented(site):
    missing = []
    for mod, nb in _modules():
        page = (site/f"{nb}.html").read_text()
        for name in mod.__all__:
            obj = getattr(mod, name)
            documented = f'id="{name}"' in page if callable(obj) else name in page
            if not documented: missing.append(f"{mod.__name__}.{name} (page {nb}.html)")
    assert not missing, "undocumented exported symbols: " + ", ".join(missing)


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("UNIMD_REQUIRE_CHROMIUM"): pytest.fail("chromium is required (UNIMD_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


# without the networking flags Chromium floods the closed network with connection attempts
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_index_renders_in_headless_chromium(site, tmp_path):
    flags = [*_FLAGS, f"--user-data-dir={tmp_path/'profile'}"]
    r = subprocess.run([_chromium(), *flags, "--dump-dom", (site/"index.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert r.returncode == 0 and "<main>" in dom, r.stderr[-2000:]
    assert re.search(r"<title>[^<]*unimd[^<]*</title>", dom) and "<h1>unimd</h1>" in dom
    links = set(re.findall(r'<a href="([^"#]+)"', dom))
    pages = {p["html"] for p in json.loads((site/"pages.json").read_text())}
    assert pages <= links, f"index page lacks links to {sorted(pages - links)}"

# ---- the pages as a reader's browser shows them (Chrome DevTools protocol over a websocket) ----

class Page:
    "One headless-Chromium tab: open a page, wait until it has loaded, evaluate JavaScript in it."
    def __init__(self, exe, profile):
        websocket = pytest.importorskip("websocket")
        self.proc = subprocess.Popen([exe, *_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile)/"DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip(): break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        tab = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.n = 0

    def send(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                assert "error" not in m, m
                return m["result"]

    def js(self, expression):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def open(self, url):
        self.send("Page.navigate", url=url)
        for _ in range(300):
            if self.js("document.readyState") == "complete" and self.js("document.URL") == url: break
            time.sleep(0.1)
        time.sleep(0.3)  # deferred scripts (KaTeX, search) have run by 'complete'; let layout settle

    def close(self):
        self.ws.close(); self.proc.terminate(); self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(site, tmp_path_factory):
    p = Page(_chromium(), tmp_path_factory.mktemp("chromium"))
    yield p
    p.close()


def test_math_is_typeset_offline(site, page):
    page.open((site/"14_heads.html").as_uri())
    n_katex = page.js("document.querySelectorAll('main .katex').length")
    # what a reader sees: the page text without KaTeX's hidden MathML copy of the source
    visible = page.js("(() => { const m = document.querySelector('main').cloneNode(true);"
                      " m.querySelectorAll('.katex-mathml, script').forEach(e => e.remove()); return m.innerText; })()")
    assert n_katex > 0 and "$$" not in visible and "\\ell_" not in visible, visible[:500]
    # nothing is fetched from the network: every script and style of the page is a file of the site
    assert page.js("[...document.querySelectorAll('script[src], link[href]')].every(e => (e.src || e.href).startsWith('file:'))")


def test_every_page_with_math_renders_it(site):
    for html_page in sorted(site.glob("*.html")):
        text = html_page.read_text()
        if "$$" in text or re.search(r"\$[^$\s][^$]*\$", text):
            assert 'src="katex/katex.min.js"' in text, f"{html_page.name} has math but does not load KaTeX"
    assert (site/"katex"/"katex.min.js").exists() and list((site/"katex"/"fonts").glob("*.woff2"))


def test_figures_load(site, page):
    page.open((site/"23_viz.html").as_uri())
    widths = page.js("[...document.querySelectorAll('main img')].map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths), widths


def test_sidebar_groups_and_search(site, page):
    page.open((site/"index.html").as_uri())
    groups = page.js("[...document.querySelectorAll('nav .group')].map(g => g.textContent)")
    assert groups == ["Foundations", "The model", "Training & metrics", "Datasets", "Task fusion", "Inference",
                      "Official checkpoints", "Paper tables", "Tools"]
    page.js("(() => { const s = document.getElementById('search'); s.value = 'Soft-NMS';"
            " s.dispatchEvent(new Event('input')); })()")
    hits = page.js("[...document.querySelectorAll('#search-results a.result')].map(a => a.getAttribute('href'))")
    assert hits and hits[0].startswith("18_nms.html"), hits
    page.js("(() => { const s = document.getElementById('search'); s.value = 'zzzqqq';"
            " s.dispatchEvent(new Event('input')); })()")
    assert page.js("document.getElementById('search-results').textContent") == "no page matches"


def test_fidelity_page_is_linked_from_the_index(site, page):
    assert (site/"02_fidelity.html").exists()
    page.open((site/"index.html").as_uri())
    assert page.js("[...document.querySelectorAll('main a')].some(a => a.getAttribute('href').startsWith('02_fidelity.html'))")
    readme = (ROOT/"README.md").read_text()
    assert "](nbs/02_fidelity.ipynb)" in readme

