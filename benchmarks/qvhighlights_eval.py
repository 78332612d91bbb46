#!/usr/bin/env python
"""The official QVHighlights evaluation on the whole validation set (1 550 queries); prints a table (a measurement,
not a test).

Workloads: the ground truth scored as predictions (`qvh_ground_truth_as_predictions`: windows with score 1, clip
saliency = the annotators' summed scores) and, with --sample, Moment-DETR's released predictions
(`standalone_eval/sample_val_preds.jsonl`). `eval_qvhighlights` reads the JSONL files, as the official script does;
median of --runs. With --official DIR (a checkout of jayleicn/moment_detr, in a Python that has scikit-learn:
--official-python) the official script runs on the same files side by side, and the two results are compared key by key.

Usage: .venv/bin/python benchmarks/qvhighlights_eval.py [--gt ../shared/data/qvhighlights/highlight_val_release.jsonl]
       [--sample PATH] [--official DIR --official-python PY] [--runs 3]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from unimd.evaluators import eval_qvhighlights, qvh_ground_truth_as_predictions, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, runs):
    out, times = None, []
    for _ in range(runs):
        t = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gt", default=str(ROOT.parent/"shared"/"data"/"qvhighlights"/"highlight_val_release.jsonl"))
    p.add_argument("--sample", help="Moment-DETR's standalone_eval/sample_val_preds.jsonl")
    p.add_argument("--official", help="a jayleicn/moment_detr checkout (runs standalone_eval/eval.py)")
    p.add_argument("--official-python", default="python", help="a Python with numpy and scikit-learn for the official script")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    work = {"ground truth as predictions": write_jsonl(qvh_ground_truth_as_predictions(a.gt), tmp/"gt_as_pred.jsonl")}
    if a.sample: work["Moment-DETR sample predictions"] = Path(a.sample)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"{'workload':<32} {'unimd (s)':>10} {'official (s)':>13}  same result")
    for name, path in work.items():
        ours, t = timed(lambda: eval_qvhighlights(path, a.gt), a.runs)
        t_off, same = "", ""
        if a.official:
            save = tmp/"official.json"
            t0 = time.perf_counter()
            subprocess.run([a.official_python, "standalone_eval/eval.py", "--submission_path", str(path.resolve()),
                            "--gt_path", str(Path(a.gt).resolve()), "--save_path", str(save), "--not_verbose"],
                           cwd=a.official, env={**os.environ, "PYTHONPATH": a.official}, check=True, capture_output=True)
            t_off = f"{time.perf_counter() - t0:.2f}"
            same = str(json.dumps(json.loads(save.read_text())) == json.dumps(ours))
        print(f"{name:<32} {t:>10.2f} {t_off:>13}  {same}")
        print("  brief:", json.dumps(ours["brief"]))


if __name__ == "__main__":
    main()
