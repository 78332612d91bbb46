"""The paper-table runner at the smoke scale (what CI runs: every notebook, seconds per row) with its claims and
verdicts, no table repeating another, the paper's numbers recorded completely, safe defaults (smoke by default,
results replaced only when every notebook succeeded), and the dry run of the paper scale (slow: UNIMD_SLOW=1)."""
import json
import os
import re
import subprocess
import sys
import time

import nbformat
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, shared_path
from unimd.tables import (ORDER, TABLE_DATA, Claim, TableContext, _execute, check_claims, paper_numbers, repeated_tables,
                          results_dir, run_tables, verdict, write_outputs)

CLI = [sys.executable, "-c", "from unimd.cli import main; raise SystemExit(main())"]


def test_every_table_notebook_runs_at_smoke_scale(tmp_path):
    env = {**os.environ, "UNIMD_TABLE_CACHE": str(tmp_path/"cache")}
    # no --scale: the smoke scale
    r = subprocess.run(CLI + ["tables", "--workers", "2", "--out", str(tmp_path/"out")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    # quiet logs: no kernel warnings, no ERROR lines on success
    assert "TCP without encryption" not in r.stderr and "ERROR" not in r.stderr and "KeyboardInterrupt" not in r.stderr
    out = tmp_path/"out"
    names = sorted(p.stem for p in (ROOT/"paper_tables").glob("*.ipynb"))
    assert sorted(ORDER) == names == sorted(TABLE_DATA)
    summary = (out/"SUMMARY.md").read_text()
    for n in names:
        assert f"### {n} — " in summary and (out/f"{n}.csv").exists() and (out/"executed"/f"{n}.ipynb").exists()
        meta = json.loads((out/f"{n}.meta.json").read_text())
        assert meta["scale"] == "smoke" and meta["seeds"] == [0] and len(meta["git_commit"]) >= 7 and meta["runtime_s"] > 0
        claims = pd.read_csv(out/f"{n}.claims.csv")
        assert len(claims) and claims["verdict"].str.match(r"(not resolved \(one seed\)|not tested: )").all()
    assert (out/"figure1b.png").stat().st_size > 10_000
    # SUMMARY opens with the claims of every table
    assert summary.index("## The paper's claims and their verdicts") < summary.index("### table1a — ")
    assert summary.index("| table1a | the query in the regression head helps TAD |") < summary.index("### table1a — ")
    t = pd.read_csv(out/"table1b.csv")
    # 7 regimes + the 3 co-training regimes retimed to TAD individual's updates; each row says its updates
    assert len(t) == 10 and t["TAD mAP mean"].notna().sum() == 8 and t["MR R1@50 mean"].notna().sum() == 8
    assert t["updates"].astype(str).str.fullmatch(r"\d+( \+ \d+)?").all() and (t["plateaued"] == "too few epochs").all()
    # the paper's rows beside ours, same names and columns (Ego4D's TAD R1@50 included)
    assert "| TAD+MR Sync. | paper |  |  |  | 24.12 | 44.14 | 14.48 | 10.09 |" in summary
    assert t["TAD R1@50 mean"].notna().sum() == 8
    # no table repeats another; the figure shows the claims and curve of Table 1d's rows, not the rows again
    tables = {n: pd.read_csv(out/f"{n}.csv") for n in names}
    assert repeated_tables(tables) == [] and len(tables["figure1b"]) == 0 and len(tables["table1d"]) == 6
    # Table 3's rows that need CLIP features are said once, with the reason
    t3 = (out/"table3.md").read_text()
    assert t3.count("Not computed at this scale (the benchmark has one kind of features") == 1
    assert summary.index("### table1a") < summary.index("### figure1b") < summary.index("### table2")


def test_verdicts_on_hand_made_numbers():
    t = pd.DataFrame([{"row": r, "seeds": n, "X mean": m, "X std": s}
                      for r, (m, s, n) in {"a": (12.0, 1.0, 3), "b": (10.0, 0.5, 3), "c": (11.5, 0.8, 3), "one": (30.0, 0.0, 1)}.items()])
    paper = pd.DataFrame({"row": ["a", "b"], "X": [5.0, 4.5]})
    got = check_claims(t, [Claim("a>b", "a", "b", "X"), Claim("b>a", "b", "a", "X"), Claim("a>c", "a", "c", "X"),
                           Claim("a best", "a", ("b", "c"), "X"), Claim("one>a", "one", "a", "X"), Claim("a>z", "a", "z", "X")], paper)
    assert got["verdict"].tolist() == ["reproduced", "contradicted", "not resolved", "not resolved", "not resolved (one seed)",
                                       "not tested: row not computed: z"]
    assert got["difference"].tolist()[:4] == [2.0, -2.0, 0.5, 0.5] and got["spread"].tolist()[:4] == [1.0, 1.0, 1.0, 1.0]
    assert got["paper"].tolist()[:2] == ["+0.50", "-0.50"] and got.loc[3, "ours"] == "12.00 vs 11.50 (c)"
    # a difference equal to the spread is within it
    edge = pd.DataFrame([{"row": "p", "seeds": 2, "X mean": 2.0, "X std": 1.0}, {"row": "q", "seeds": 2, "X mean": 1.0, "X std": 0.2}])
    assert verdict(edge, Claim("p>q", "p", "q", "X"))["verdict"] == "not resolved"


def test_identical_tables_are_found():
    a = pd.DataFrame({"row": ["i", "s"], "TAD mAP mean": [1.0, 2.0], "MR mean": [3.0, np.nan]})
    b = a.assign(row=["other", "names"]).iloc[::-1]
    c = a.assign(**{"TAD mAP mean": [1.0, 2.5]})
    assert repeated_tables({"table2": a, "table3": b, "table4": c}) == [("table2", "table3")]


def _paper_md_numbers():
    "{table key: set of numbers} from PAPER_NUMBERS.md (every number in its tables' cells, the checkpoints excluded)."
    text = shared_path("paper", "PAPER_NUMBERS.md").read_text()
    keys = {"Table 1a": "table1a", "Table 1b": "table1b", "Table 1c": "table1c", "Table 1d": "table1d", "Table 2": "table2",
            "Table 3": "table3", "Table 4": "table4", "Official individual": "readme"}
    out, key = {}, None
    for line in text.splitlines():
        if line.startswith("## "): key = next((v for k, v in keys.items() if line[3:].startswith(k)), None)
        elif key and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            nums = [float(m) for c in cells[1:] for m in re.findall(r"^(\d+\.\d+|\d+\.\d)(?: \(|$)", c)]
            out.setdefault(key, set()).update(nums)
    return out


def test_every_number_of_the_paper_is_recorded():
    md = _paper_md_numbers()
    cols = lambda t: [c for c in paper_numbers(t).columns if c not in ("row", "paper_row", "split", "feature", "source")]
    recorded = {t: {float(v) for v in paper_numbers(t)[cols(t)].to_numpy().ravel() if v is not None and not pd.isna(v)}
                for t in ("table1a", "table1b", "table1c", "table1d", "table2", "table3", "table4")}
    for t in recorded:
        assert md[t] - {0.0} <= recorded[t], (t, sorted(md[t] - recorded[t]))
    # the README's individual checkpoints sit beside Tables 2-4 (52.22: ANet-Captions R5@70)
    readme = md["readme"] - {30.0, 50.0, 70.0}
    assert readme <= recorded["table2"] | recorded["table3"] | recorded["table4"], sorted(readme - recorded["table2"] - recorded["table3"] - recorded["table4"])
    assert paper_numbers("figure1b")["TAD mAP"].fillna(-1).tolist() == paper_numbers("table1d")["TAD mAP"].fillna(-1).tolist()
    text = (ROOT/"paper_tables"/"paper_numbers.yaml").read_text()
    assert "NOT RECORDED" not in text.split("supp_fusion_charades:")[0]


def test_safe_defaults():
    from unimd.cli import build_parser
    assert build_parser().parse_args(["tables"]).scale == "smoke"
    assert results_dir("smoke").is_relative_to(ROOT/"runs") and results_dir("paper", dry_run=True).is_relative_to(ROOT/"runs")
    assert results_dir("synthetic") == ROOT/"paper_tables"/"results"/"synthetic"
    r = subprocess.run(CLI + ["tables", "--dry-run"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "--scale paper" in r.stderr


def _nb(folder, name, code):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("scale = 'smoke'\noutput_dir = None", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(code)])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "language_info": {"name": "python"}}
    nbformat.write(nb, folder/f"{name}.ipynb")
    return folder/f"{name}.ipynb"


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    p = _nb(tmp_path, "broken", "1 / 0")
    (tmp_path/"out"/"executed").mkdir(parents=True)
    name, err = _execute(p, "smoke", tmp_path/"out", {})
    assert name == "broken" and "ZeroDivisionError" in err and err.startswith("cell 2")   # papermill inserts the injected-parameters cell
    assert (tmp_path/"out"/"executed"/"broken.ipynb").exists()   # the failed notebook is kept for reading


def test_a_failed_run_leaves_the_results_byte_identical(tmp_path):
    nbs, out = tmp_path/"nbs", tmp_path/"out"
    nbs.mkdir(); (out/"executed").mkdir(parents=True)
    before = {"table1a.md": b"### table1a\n\nold\n", "table1b.md": b"### table1b\n\nold\n", "SUMMARY.md": b"old summary\n",
              "executed/table1a.ipynb": b"{}\n"}
    for k, v in before.items(): (out/k).write_bytes(v)
    _nb(nbs, "table1a", "from pathlib import Path\n(Path(output_dir)/'table1a.md').write_text('### table1a\\n\\nnew\\n')")
    _nb(nbs, "table1b", "raise RuntimeError('boom')")
    cwd = os.getcwd()
    failures = run_tables("smoke", workers=2, output_dir=out, notebooks=nbs)
    assert os.getcwd() == cwd   # two notebooks at once must not move the caller into a notebook folder
    assert [n for n, _ in failures] == ["table1b"] and "RuntimeError: boom" in failures[0][1] and str(out/"failed") in failures[0][1]
    assert {k: (out/k).read_bytes() for k in before} == before
    assert (out/"failed"/"table1a.md").read_text().endswith("new\n") and (out/"failed"/"executed"/"table1b.ipynb").exists()


def test_the_committed_synthetic_results_repeat_no_table():
    """paper_tables/results/synthetic: every table of the synthetic scale on its surrogate benchmark over three seeds,
    with the machine and time in its footer, and no two tables printing the same result rows."""
    out = ROOT/"paper_tables"/"results"/"synthetic"
    tables = {p.name.split(".")[0]: pd.read_csv(p) for p in out.glob("*.csv") if not p.name.endswith(".claims.csv")}
    assert set(tables) >= set(ORDER) - {"open_vocab"}
    assert repeated_tables(tables) == []
    for n in set(ORDER) - {"open_vocab"}:
        meta = json.loads((out/f"{n}.meta.json").read_text())
        assert meta["scale"] == "synthetic" and meta["seeds"] == [0, 1, 2], n
        assert {r["name"].split("_")[0] for r in meta["runs"]} == {TABLE_DATA[n][1]["synthetic"].split("_")[0]}, n
        assert meta["machine"] and meta["finished"].endswith("UTC"), n
    summary = (out/"SUMMARY.md").read_text()
    assert summary.count("<sub>commit ") >= len(ORDER) - 1 and "machine " in summary and " UTC, notebook " in summary
    assert "near chance by construction" in (out/"table1b.md").read_text()   # ego4d_ann's MR columns, said in plain words


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


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("UNIMD_SLOW"), reason="the paper-scale dry run writes ~24 GB and takes tens of minutes: UNIMD_SLOW=1")
def test_dry_run_of_the_paper_scale(tmp_path):
    """`unimd tables --scale paper --dry-run`: fake features at the real file counts and shapes beside the real
    annotations, every notebook end to end with one iteration per run. UNIMD_DRY_RUN_DATA reuses written fake files,
    UNIMD_DRY_RUN_CACHE finished runs."""
    from unimd.paper_datasets import anet13_database_from_tsp
    anet = lambda *p: shared_path("data", "activitynet", *p)
    anet_json = tmp_path/"anet1.3_tsp_filtered.json"
    anet_json.write_text(json.dumps(anet13_database_from_tsp(
        {"training": anet("anet13", "activitynet_v1-3_train_tsp_groundtruth.csv"),
         "validation": anet("anet13", "activitynet_v1-3_valid_tsp_groundtruth.csv")},
        anet("anet13", "activitynet_v1-3_action_label_mapping.json"))))
    ego, cha = (lambda *p: shared_path("data", "ego4d", *p)), (lambda *p: shared_path("data", "charades", *p))
    sets = {"ego4d.mq_annotations": ego("mq_clip_annotations_not_filter.json"), "ego4d.mq_test_annotations": ego("mq_clip_annotations_test_no_gt.json"),
            "ego4d.nlq_annotations": ego("nlq_clip_annotations_not_filter.json"), "ego4d.nlq_test_annotations": ego("nlq_clip_annotations_test_no_gt.json"),
            "ego4d.nlq_val_official": ego("nlq_nlq_val.json"),
            "charades.tad_train_annotations": cha("Charades_v1_train.csv"), "charades.tad_test_annotations": cha("Charades_v1_test.csv"),
            "charades.class_names": cha("Charades_v1_classes.txt"), "charades.mr_train_annotations": cha("charades_sta_train.txt"),
            "charades.mr_test_annotations": cha("charades_sta_test.txt"), "anet.tad_annotations": anet_json,
            "anet.mr_train_annotations": anet("captions", "train_modified.json"), "anet.mr_val1_annotations": anet("captions", "val_1.json"),
            "anet.mr_val2_annotations": anet("captions", "val_2.json"), "general.device": "cpu"}
    data = os.environ.get("UNIMD_DRY_RUN_DATA") or str(tmp_path/"fake")
    argv = ["tables", "--scale", "paper", "--dry-run", "--dry-run-data", data, "--workers", "2", "--out", str(tmp_path/"out")]
    for k, v in sets.items(): argv += ["--set", f"{k}={v}"]
    t0 = time.time()
    r = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=3 * 3600, cwd=ROOT,
                       env={**os.environ, "UNIMD_TABLE_CACHE": os.environ.get("UNIMD_DRY_RUN_CACHE") or str(tmp_path/"cache")})
    print(f"dry run: {time.time() - t0:.0f} s")
    assert r.returncode == 0, r.stderr[-5000:]
    counts = {p.name: json.loads(p.read_text()) for p in __import__("pathlib").Path(data).glob(".*.written")}
    # the real file counts: every video of the splits the tables use
    assert counts[".ego4d.written"]["validation"]["features"] == 849 and counts[".charades.written"]["Test"]["features"] == 2 * 1863
    out = tmp_path/"out"
    for n in ORDER:
        meta = json.loads((out/f"{n}.meta.json").read_text())
        assert meta["scale"] == "paper" and meta["dry_run"] is True
    assert "| TAD+MR Sync. | ours (paper) |" in (out/"table1b.md").read_text()
