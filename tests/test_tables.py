"""The paper-table runner at the smoke scale (what CI runs: every notebook, seconds per row), its failure report,
and atomic outputs."""
import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from conftest import ROOT
from unimd.tables import ORDER, TableContext, _execute, write_outputs

CLI = [sys.executable, "-c", "from unimd.cli import main; raise SystemExit(main())"]


def test_every_table_notebook_runs_at_smoke_scale(tmp_path):
    env = {**os.environ, "UNIMD_TABLE_CACHE": str(tmp_path/"cache")}
    r = subprocess.run(CLI + ["tables", "--scale", "smoke", "--workers", "2", "--out", str(tmp_path/"out")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/"out"
    names = sorted(p.stem for p in (ROOT/"paper_tables").glob("*.ipynb"))
    assert sorted(ORDER) == names
    summary = (out/"SUMMARY.md").read_text()
    for n in names:
        assert f"### {n}" in summary and (out/f"{n}.csv").exists() and (out/"executed"/f"{n}.ipynb").exists()
        meta = json.loads((out/f"{n}.meta.json").read_text())
        assert meta["scale"] == "smoke" and meta["seeds"] == [0] and len(meta["git_commit"]) >= 7 and meta["runtime_s"] > 0
    assert (out/"figure1b.png").stat().st_size > 10_000
    t = pd.read_csv(out/"table1b.csv")
    # 7 regimes + the 3 co-training regimes retimed to Individual TAD's updates; each row says its updates
    assert len(t) == 10 and t["TAD mAP mean"].notna().sum() == 8 and t["MR R1@0.5 mean"].notna().sum() == 8
    assert t["updates"].astype(str).str.fullmatch(r"\d+( \+ \d+)?").all()
    assert "training budgets differ" in (out/"table1b.md").read_text()
    # the order of the paper
    assert summary.index("### table1a") < summary.index("### figure1b") < summary.index("### table2")


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("scale = 'smoke'\noutput_dir = None", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "language_info": {"name": "python"}}
    p = tmp_path/"broken.ipynb"
    nbformat.write(nb, p)
    (tmp_path/"out"/"executed").mkdir(parents=True)
    name, err = _execute(p, "smoke", tmp_path/"out", {})
    assert name == "broken" and "ZeroDivisionError" in err and err.startswith("cell 3")
    assert (tmp_path/"out"/"executed"/"broken.ipynb").exists()   # the failed notebook is kept for reading


def test_outputs_are_replaced_only_when_complete(tmp_path):
    ctx = TableContext("smoke", "cpu", [0], None, tmp_path, tmp_path/"cache")
    good = pd.DataFrame({"row": ["a"], "x": ["1.00"]})
    write_outputs(ctx, "t", good)
    before = (tmp_path/"t.md").read_text()

    class Broken:
        def savefig(self, *a, **k): raise RuntimeError("figure failed")
    with pytest.raises(RuntimeError):
        write_outputs(ctx, "t", pd.DataFrame({"row": ["b"], "x": ["2.00"]}), figures={"t": Broken()})
    assert (tmp_path/"t.md").read_text() == before and pd.read_csv(tmp_path/"t.csv")["row"].tolist() == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md", "t.meta.json"]
