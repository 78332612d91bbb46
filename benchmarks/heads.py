"""Speed of the batched query-dependent heads against a per-video, per-query loop (the official structure).

Workload (issue 3): Charades-like TAD — 157 class queries shared by a batch of 2 videos, T = 288, official widths
(512), six pyramid levels; plus an MR case with per-video queries (Ego4D-NLQ-like counts 40 and 56).
Both implementations give the same outputs (max difference ≤ 1e-5 × the largest output, checked before timing). Forward only, no grad.

    .venv/bin/python benchmarks/heads.py [--repeats 5] [--threads N]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from unimd.heads import QueryClsHead, QueryRegHead


def loop_heads(cls_head, reg_head, hc, hr, masks, queries_per_video):
    "The official structure: per level, per video, per query one dot product and one conv1d."
    cls_out, reg_out = [], []
    for l, (h_c, h_r, m) in enumerate(zip(hc, hr, masks)):
        c_l, r_l = [], []
        for v, qs in enumerate(queries_per_video):
            w, c = reg_head.kernels(qs)                    # the official generator runs once per video's queries
            cs, rs = [], []
            for q in range(qs.shape[0]):
                cs.append((cls_head.cls_fn.weight * (h_c[v].T @ qs[q]) + cls_head.cls_fn.bias) * m[v])
                o = F.conv1d(h_r[v][None], w[q], c[q], padding=reg_head.k // 2)[0] * m[v]
                rs.append(F.relu(reg_head.scale[l](o)).T)
            c_l.append(torch.stack(cs, -1)); r_l.append(torch.stack(rs, 1))
        cls_out.append(c_l); reg_out.append(r_l)
    return cls_out, reg_out


def batched_heads(cls_head, reg_head, hc, hr, masks, queries):
    return cls_head(hc, masks, queries), reg_head(hr, masks, queries)


def timeit(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    D, B, T = 512, 2, 288
    cls_head, reg_head = QueryClsHead(D, D).eval(), QueryRegHead(D, D).eval()
    feats = [torch.randn(B, D, T >> l) for l in range(6)]
    masks = [torch.ones(B, T >> l, dtype=torch.bool) for l in range(6)]
    masks[0][1, 250:] = False
    for l in range(1, 6): masks[l] = masks[l - 1][:, ::2]
    rows = []
    with torch.no_grad():
        hc, hr = cls_head.features(feats, masks), reg_head.features(feats, masks)
        tad_q = torch.randn(157, D)
        counts = [40, 56]
        mr_q = torch.zeros(B, max(counts), D)
        for v, n in enumerate(counts): mr_q[v, :n] = torch.randn(n, D)
        cases = [("TAD: 157 shared queries", tad_q, [tad_q, tad_q], [157, 157]),
                 ("MR: 40 + 56 per-video queries", mr_q, [mr_q[v, :n] for v, n in enumerate(counts)], counts)]
        for name, q_batched, q_loop, ns in cases:
            cb, rb = batched_heads(cls_head, reg_head, hc, hr, masks, q_batched)
            cl, rl = loop_heads(cls_head, reg_head, hc, hr, masks, q_loop)
            for l in range(6):
                for v, n in enumerate(ns):
                    for a, b in ((cb[l][v, :, :n], cl[l][v]), (rb[l][v, :, :n], rl[l][v])):
                        # float32 sums in another order: equal to 1e-5 of the outputs' scale
                        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), (name, l, v)
            t_b = timeit(lambda: batched_heads(cls_head, reg_head, hc, hr, masks, q_batched), args.repeats)
            t_l = timeit(lambda: loop_heads(cls_head, reg_head, hc, hr, masks, q_loop), args.repeats)
            rows.append((name, t_l, t_b))
    print(f"heads forward (query-dependent parts), batch {B}, T={T}, width {D}, 6 levels, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}; outputs equal to 1e-5 of their scale")
    print(f"{'case':<32}{'per-query loop':>16}{'batched':>12}{'speed-up':>10}")
    for name, t_l, t_b in rows:
        print(f"{name:<32}{t_l * 1e3:>13.1f} ms{t_b * 1e3:>9.1f} ms{t_l / t_b:>9.1f}×")


if __name__ == "__main__":
    main()
