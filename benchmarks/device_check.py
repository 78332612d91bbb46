#!/usr/bin/env python
"""The GPU check (run by benchmarks/device_check.sh): Triton Soft-NMS exactness and speed, one training iteration
and inference per video on CUDA, ours and (with --official) the official code; one JSON of results.

Needs only torch (+ Triton for the kernel), numpy and this working tree on PYTHONPATH: no network, no package
registry. `--dry-run` runs the same steps on CPU with tiny inputs and a tiny model, the kernel in Triton's
interpreter (TRITON_INTERPRET=1, set by the shell script), so CI can test the script itself.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def timed(fn, runs, warmup, sync):
    for _ in range(warmup): fn()
    sync()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t)
    return dict(median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts), runs=runs)


def fixture_checks(dev, max_n):
    "Triton against the CPU backend on every recorded official case small enough here: exact (indices and scores)."
    from unimd.nms import nms_groups
    folders = [ROOT/"tests"/"fixtures"/"softnms", ROOT.parent/"shared"/"fixtures"/"softnms"]
    out = []
    for folder in folders:
        if not (folder/"cases.json").exists(): continue
        for case in json.loads((folder/"cases.json").read_text())["cases"]:
            if case["api"] != "softnms_op" or case["n"] > max_n: continue
            z, p = np.load(folder/case["file"]), case["params"]
            segs, scores = torch.from_numpy(z["in_segs"]), torch.from_numpy(z["in_scores"])
            one = torch.zeros(len(scores), dtype=torch.long)
            method = {0: "hard", 1: "linear", 2: "gaussian"}[p["method"]]
            args = (method, p["iou_threshold"], p["sigma"], p["min_score"], -1)
            k_cpu, s_cpu = nms_groups(segs, scores, one, *args, backend="cpu")
            k_tri, s_tri = nms_groups(segs.to(dev), scores.to(dev), one.to(dev), *args, backend="triton")
            same = torch.equal(k_cpu, k_tri.cpu()) and torch.equal(s_cpu, s_tri.cpu())
            out.append(dict(folder=folder.parent.parent.name, case=case["file"], n=case["n"], exact=bool(same),
                            official_inds=bool(k_cpu.tolist() == z["out_inds"].tolist())))
    return out


def softnms_timings(dev, dry_run, runs, warmup, sync, off):
    from softnms import charades_like, ego4d_like
    from unimd.nms import BACKENDS, nms_groups
    import versus_official as V
    rows = []
    small = dict(n_videos=1, max_cands=120) if dry_run else {}
    for name, (segs, scores, group), cfg in (
            ("ego4d-mq", ego4d_like(**small), dict(sigma=0.9, max_per_group=2000)),
            ("charades-sta", charades_like(**(dict(n_queries=2, n_cands=40) if dry_run else {})), dict(sigma=0.5, max_per_group=200))):
        p = dict(method="gaussian", iou_threshold=0.1, min_score=0.001, **cfg)
        g = [t.to(dev) for t in (segs, scores, group)]
        ref = nms_groups(segs, scores, group, backend="cpu", **p)
        tri = nms_groups(*g, backend="triton", **p)
        r = dict(workload=name, candidates=len(scores), groups=int(len(torch.unique(group))),
                 triton_equals_cpu=bool(torch.equal(ref[0], tri[0].cpu()) and torch.equal(ref[1], tri[1].cpu())),
                 triton=timed(lambda: nms_groups(*g, backend="triton", **p), runs, warmup, sync),
                 cpu_batched=timed(lambda: nms_groups(segs, scores, group, backend="cpu", **p), max(1, runs // 10), 1, lambda: None))
        if "compiled" in BACKENDS:
            r["cpu_compiled"] = timed(lambda: nms_groups(segs, scores, group, backend="compiled", **p), max(1, runs // 10), 1, lambda: None)
        if off is not None:   # the official compiled op is CPU-only: its per-video, per-class loop as evaluation runs it
            n_cls = 110 if name == "ego4d-mq" else 1
            w = dict(segs=segs, scores=scores, labels=group % n_cls if n_cls > 1 else torch.zeros_like(group),
                     video=group // n_cls if n_cls > 1 else group,
                     cfg=dict(iou_threshold=0.1, min_score=0.001, sigma=cfg["sigma"], max_seg_num=cfg["max_per_group"]))
            r["official_cpu_op"] = timed(lambda: V.official_nms(off, w), 1, 0, lambda: None)
        r["speedup_triton_vs_cpu_batched"] = r["cpu_batched"]["median_s"] / r["triton"]["median_s"]
        rows.append(r)
    return rows


def model_timings(dev, dry_run, runs, sync, off):
    import versus_official as V
    from unimd.data import collate
    from unimd.decode import predict
    out = {}
    shapes = [("ego4d", V.EGO4D_YAML, 1024, 110), ("charades", V.CHARADES_YAML, 288, 157)]
    if dry_run: shapes = [("tiny", V.EGO4D_YAML, 64, 5)]
    for name, yaml, T, ncls in shapes:
        tiny = V.TINY_MODEL if dry_run else None
        ours_step, their_step, rec = V.train_step_fns(off, yaml, T, ncls, device=dev, model_override=tiny)
        r = dict(T=T, classes=ncls, ours_train_iter=timed(ours_step, runs, 1, sync))
        if their_step is not None: r["official_train_iter"] = timed(their_step, runs, 1, sync)
        ours, cfg, theirs, _ = V.models(off, yaml, device=dev, model_override=tiny)
        ours.eval()
        tad_q = V.unit(torch.randn(ncls, cfg.model.text_dim))
        s = V.synth_samples(cfg, 1, T, ncls, 5, tad_q)[0]
        b = collate([s], cfg.data.max_seq_len, training=False, max_stride=ours.max_stride).to(dev)
        r["ours_inference_per_video"] = timed(lambda: predict(ours, b, cfg.test), runs, 1, sync)
        if theirs is not None:
            theirs.eval()
            vl = [{t: {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in V.official_video(s, t).items()} for t in ("tad", "mr")}]
            with torch.no_grad():
                r["official_inference_per_video"] = timed(lambda: theirs(vl, [["tad", "mr"]]), runs, 1, sync)
        out[name] = r
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny inputs, Triton interpreter (what CI runs)")
    ap.add_argument("--official", type=Path, help="checkout of the official UniMD code (adds its timings)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device_check_out")))
    ap.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 20; dry run 2)")
    a = ap.parse_args(argv)
    from unimd import nms as N
    if a.dry_run:
        if not N._interpreted(): raise SystemExit("--dry-run needs TRITON_INTERPRET=1 before Python starts (device_check.sh sets it)")
        dev, sync, runs, warmup, max_n = "cpu", (lambda: None), a.runs or 2, 1, 60
    else:
        if not torch.cuda.is_available(): raise SystemExit("no CUDA device: run with --dry-run to test the script on CPU")
        if "triton" not in N.BACKENDS or N._interpreted():
            raise SystemExit("Triton is missing or TRITON_INTERPRET=1 is set: the check needs the compiled kernel")
        dev, sync, runs, warmup, max_n = "cuda", torch.cuda.synchronize, a.runs or 20, 3, 10**9
    import versus_official as V
    off = V.load_official(a.official) if a.official else None
    t0 = time.time()
    res = dict(dry_run=a.dry_run, device=torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or "cpu",
               torch=torch.__version__, triton=getattr(N.triton, "__version__", None), threads=torch.get_num_threads(),
               official=str(off.path) if off else None)
    step = lambda msg: print(f"[{time.time() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)
    res["softnms_fixtures"] = fixture_checks(dev, max_n)
    res["softnms_fixtures_all_exact"] = all(r["exact"] for r in res["softnms_fixtures"])
    step(f"fixtures: {len(res['softnms_fixtures'])} cases, all exact: {res['softnms_fixtures_all_exact']}")
    res["softnms"] = softnms_timings(dev, a.dry_run, runs, warmup, sync, off)
    step("Soft-NMS timings")
    res["model"] = model_timings(dev, a.dry_run, runs, sync, off)
    step("training iteration and inference")
    res["wall_s"] = time.time() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out/"device_check.json"
    path.write_text(json.dumps(res, indent=1, default=float))
    ok = res["softnms_fixtures_all_exact"] and all(r["triton_equals_cpu"] for r in res["softnms"])
    print(f"device check: {'OK' if ok else 'MISMATCH'}; {len(res['softnms_fixtures'])} fixture cases; "
          f"{res['wall_s']:.0f} s; results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
