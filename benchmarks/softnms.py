#!/usr/bin/env python
"""Soft-NMS backends on two whole-validation-set workloads; prints a table (a measurement, not a test).

* ego4d-mq: 500 videos x 110 classes, 2,500-5,000 candidates per video (levels merged), ragged per class;
  official Ego4D test config: gaussian, sigma 0.9, min_score 0.001, max_seg_num 2000.
* charades-sta: 3,720 queries x 300 candidates; official Charades config: gaussian, sigma 0.5, min_score 0.001,
  max_seg_num 200.

Candidates look decoded: a video has a few actions per present class; candidates near an action are jittered copies
of it (clustered overlaps) with sigmoid scores of higher logits, the others are spread over the video with low
sigmoid scores; each FPN level's candidates come in descending score order (top-k), levels concatenated.

Every backend gets the whole workload in one `nms_groups` call (one group per video x class or per query) and must
return exactly what the reference returns. "reference loop" is the per-group loop over the readable port
(`backend="reference"`), the shape of the official per-class loop. CPU times: median of --runs; GPU: inputs
already on the GPU, median of 20 runs after 3 warm-up runs.

Usage: .venv/bin/python benchmarks/softnms.py [--scale 1.0] [--runs 3] [--no-reference]
"""
import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from unimd import nms as N
from unimd.nms import BACKENDS, nms_groups


def _sigmoid(x): return 1 / (1 + np.exp(-x))


def ego4d_like(n_videos=500, n_classes=110, max_cands=5000, T=1024, seed=0):
    "(segs, scores, group) for an Ego4D-MQ-like validation set; group = video * n_classes + class."
    rng = np.random.default_rng(seed)
    segs, scores, groups = [], [], []
    for v in range(n_videos):
        n = int(rng.integers(max_cands // 2, max_cands + 1))
        present = rng.choice(n_classes, int(rng.integers(2, 12)), replace=False)
        n_fg = int(n * rng.uniform(0.3, 0.6))
        cls_fg = rng.choice(present, n_fg)
        # 1-5 actions per present class: centre and length (grid units)
        n_act = {c: int(rng.integers(1, 6)) for c in present}
        ctr_act = {c: rng.uniform(0, T, n_act[c]) for c in present}
        len_act = {c: np.exp(rng.normal(np.log(20), 0.8, n_act[c])) for c in present}
        k = np.array([rng.integers(n_act[c]) for c in cls_fg], dtype=np.int64)
        ln = np.array([len_act[c][j] for c, j in zip(cls_fg, k)])
        ctr_fg = np.array([ctr_act[c][j] for c, j in zip(cls_fg, k)]) + rng.normal(0, 0.15, n_fg) * ln
        ln_fg = ln * np.exp(rng.normal(0, 0.25, n_fg))
        sc_fg = _sigmoid(rng.normal(-1.0, 1.8, n_fg))
        n_bg = n - n_fg                                     # background: long-tailed over all classes
        cls_bg = rng.choice(n_classes, n_bg, p=rng.dirichlet(np.full(n_classes, 0.3)))
        ctr_bg = rng.uniform(0, T, n_bg)
        ln_bg = np.exp(rng.normal(np.log(12), 1.0, n_bg))
        sc_bg = _sigmoid(rng.normal(-4.5, 1.3, n_bg))
        ctr, ln = np.r_[ctr_fg, ctr_bg], np.r_[ln_fg, ln_bg]
        sc, cls = np.r_[sc_fg, sc_bg].astype(np.float32), np.r_[cls_fg, cls_bg]
        st, en = np.clip(ctr - ln / 2, 0, T), np.clip(ctr + ln / 2, 0, T)
        ok = (sc > 0.001) & (en - st > 0.05)                # pre_nms_thresh and duration_thresh
        st, en, sc, cls, ln = st[ok], en[ok], sc[ok], cls[ok], ln[ok]
        lvl = np.clip(np.floor(np.log2(np.maximum(ln, 1) / 4)), 0, 5)
        o = np.lexsort((-sc, lvl))                          # level-major, each level's top-k by score
        segs.append(np.stack([st, en], 1)[o]); scores.append(sc[o]); groups.append(v * n_classes + cls[o])
    return (torch.from_numpy(np.concatenate(segs).astype(np.float32)), torch.from_numpy(np.concatenate(scores)),
            torch.from_numpy(np.concatenate(groups)))


def charades_like(n_queries=3720, n_cands=300, T=96, seed=1):
    "(segs, scores, group) for a Charades-STA-like test set: one group per query, one ground-truth moment each."
    rng = np.random.default_rng(seed)
    Q, K = n_queries, n_cands
    gt_len = np.minimum(np.exp(rng.normal(np.log(25), 0.4, Q)), 0.9 * T)
    gt_ctr = rng.uniform(gt_len / 2, T - gt_len / 2)
    near = rng.random((Q, K)) < 0.6
    ctr = np.where(near, gt_ctr[:, None] + rng.normal(0, 0.2, (Q, K)) * gt_len[:, None], rng.uniform(0, T, (Q, K)))
    ln = np.where(near, gt_len[:, None] * np.exp(rng.normal(0, 0.3, (Q, K))), np.exp(rng.normal(np.log(15), 0.8, (Q, K))))
    sc = np.where(near, _sigmoid(rng.normal(-1.5, 1.5, (Q, K))), _sigmoid(rng.normal(-4, 1.5, (Q, K)))).astype(np.float32)
    st, en = np.clip(ctr - ln / 2, 0, T), np.clip(ctr + ln / 2, 0, T)
    o = np.argsort(-sc, axis=1, kind="stable")              # top-k order
    take = lambda a: np.take_along_axis(a, o, 1).reshape(-1)
    segs = np.stack([take(st), take(en)], 1).astype(np.float32)
    return torch.from_numpy(segs), torch.from_numpy(take(sc)), torch.from_numpy(np.repeat(np.arange(Q), K))


def _time(f, runs, sync=lambda: None, warmup=0):
    for _ in range(warmup): f()
    sync()
    ts, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the videos / queries (1.0: whole sets)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of the cpu backend (median)")
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) reference loop")
    a = ap.parse_args()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
          f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    workloads = [
        ("ego4d-mq", lambda: ego4d_like(n_videos=max(1, round(500 * a.scale))), dict(sigma=0.9, max_per_group=2000)),
        ("charades-sta", lambda: charades_like(n_queries=max(1, round(3720 * a.scale))), dict(sigma=0.5, max_per_group=200)),
    ]
    rows = []
    for name, make, cfg in workloads:
        segs, scores, group = make()
        p = dict(method="gaussian", iou_threshold=0.1, min_score=0.001, **cfg)
        sizes = torch.unique(group, return_counts=True)[1]
        desc = f"{len(sizes)} groups, {len(scores)} candidates (group sizes median {int(sizes.median())}, max {int(sizes.max())})"
        ref_t, ref = (None, None) if a.no_reference else _time(lambda: nms_groups(segs, scores, group, backend="reference", **p), 1)
        if ref is not None: rows.append((name, "reference loop", ref_t, 1.0, len(ref[0]), "-"))
        cpu_t, cpu = _time(lambda: nms_groups(segs, scores, group, backend="cpu", **p), a.runs)
        same = "-" if ref is None else ("yes" if torch.equal(ref[0], cpu[0]) and torch.equal(ref[1], cpu[1]) else "NO")
        rows.append((name, "cpu (batched)", cpu_t, ref_t / cpu_t if ref_t else None, len(cpu[0]), same))
        if "triton" in BACKENDS and torch.cuda.is_available() and not N._interpreted():
            g = [t.cuda() for t in (segs, scores, group)]
            tri_t, tri = _time(lambda: nms_groups(*g, backend="triton", **p), 20, torch.cuda.synchronize, warmup=3)
            same = "yes" if tri[0].cpu().tolist() == cpu[0].tolist() and torch.allclose(tri[1].cpu(), cpu[1], rtol=1e-6, atol=0) else "NO"
            rows.append((name, f"triton ({torch.cuda.get_device_name()})", tri_t, ref_t / tri_t if ref_t else None, len(tri[0]), same))
            rows.append((name, "  triton vs cpu", tri_t, cpu_t / tri_t, len(tri[0]), same))
        else:
            rows.append((name, "triton: no GPU", None, None, None, "-"))
        print(f"{name}: {desc}")
    print()
    print(f"{'workload':<14} {'backend':<30} {'time (s)':>10} {'speed-up':>9} {'kept':>9}  identical to reference")
    for name, be, t, r, k, same in rows:
        f = lambda x, spec: format(x, spec) if x is not None else "-"
        print(f"{name:<14} {be:<30} {f(t, '10.3f'):>10} {f(r, '8.1f') + ('x' if r else ''):>9} {f(k, '9d'):>9}  {same}")
    if "triton" in BACKENDS and N._interpreted():
        # the interpreter runs one program after the other in Python: a correctness tool, not a speed
        segs, scores, group = charades_like(n_queries=4)
        t, _ = _time(lambda: nms_groups(segs, scores, group, backend="triton", method="gaussian", sigma=0.5,
                                        max_per_group=200), 1)
        print(f"\n(triton kernel in TRITON_INTERPRET=1 mode, CPU, 4 charades-like queries only: {t:.2f} s — not a GPU timing)")


if __name__ == "__main__":
    main()
