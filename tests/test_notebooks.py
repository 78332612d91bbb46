"The notebooks are committed as their docs pages: with their outputs, clean ones, and the project's kernel."
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from unimd.nboutputs import KERNELSPEC, missing_outputs, output_problems

NOTEBOOKS = sorted((ROOT/"nbs").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_declares_the_project_kernel(path):
    spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    assert spec.get("name") == KERNELSPEC["name"], f"{path.name}: kernelspec {spec} (run `unimd docs --execute {path.name}`)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stores_clean_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert not missing_outputs(nb), f"{path.name} has examples but stores no output: run `unimd docs --execute nbs/{path.name}`"
    assert output_problems(nb, path.name) == []


def test_nbdev_clean_keeps_outputs_and_kernelspec(tmp_path):
    "The project's nbdev-clean settings keep what the pages show (outputs, the kernelspec and papermill's tags)."
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})
    cell = nbformat.v4.new_code_cell("x = 1\nx", execution_count=3, metadata={"tags": ["parameters"], "scrolled": True})
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=3),
                    nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    nb.cells = [cell]
    # nbdev-clean reads the project's settings: run it in a copy of the project's configuration
    shutil.copy2(ROOT/"pyproject.toml", tmp_path/"pyproject.toml")
    (tmp_path/"nbs").mkdir()
    nbformat.write(nb, tmp_path/"nbs"/"probe.ipynb")
    r = subprocess.run([str(Path(sys.executable).parent/"nbdev-clean"), "--fname", "nbs/probe.ipynb"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr, r.stderr
    out = json.loads((tmp_path/"nbs"/"probe.ipynb").read_text())
    c = out["cells"][0]
    assert out["metadata"] == {"kernelspec": KERNELSPEC}
    assert [o["output_type"] for o in c["outputs"]] == ["execute_result", "display_data"]
    assert c["outputs"][0]["data"] == {"text/plain": ["1"]} and c["metadata"] == {"tags": ["parameters"]}
    assert c["execution_count"] is None
