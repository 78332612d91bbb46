"The offline docs site: it builds, documents every exported public symbol, and renders in headless Chromium."
import importlib
import json
import os
import re
import shutil
import subprocess
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


def test_index_renders_in_headless_chromium(site, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path/'profile'}"]
    r = subprocess.run([_chromium(), *flags, "--dump-dom", (site/"index.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert r.returncode == 0 and "<main>" in dom, r.stderr[-2000:]
    assert re.search(r"<title>[^<]*unimd[^<]*</title>", dom) and "<h1>unimd</h1>" in dom
    links = set(re.findall(r'<a href="([^"#]+)"', dom))
    pages = {p["html"] for p in json.loads((site/"pages.json").read_text())}
    assert pages <= links, f"index page lacks links to {sorted(pages - links)}"
