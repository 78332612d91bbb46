"""Online detection cost per step on this CPU: the streaming runner of a causal official-size UniMD with 20 queries.

The model is the charades_i3d preset with `model.causal: true` and input_dim 512 (CLIP-B features, 512-d queries,
512-wide trunk), random weights; the features are random unit vectors. Three numbers per step of input:

1. streaming (`unimd.online.StreamingUniMD.push` + `FrameScorer.push`): one feature step at a time, every op keeps
   only its receptive-field window;
2. the same in chunks of 16 steps (latency of a chunk / 16);
3. the naive online alternative: re-running the whole causal model on everything seen so far at every step
   (`level_outputs` on a prefix of --prefix steps), which grows with the stream.

Times are medians over --steps steps after --warmup steps; the machine's load average is printed, since other
processes share the CPU. Memory: the number of feature steps the stream holds in all its windows.

    .venv/bin/python benchmarks/online.py [--threads 1] [--steps 200] [--queries 20]
"""
import argparse
import os
import statistics
import time

import torch

from unimd.config import official_preset
from unimd.model import UniMD
from unimd.online import FrameScorer, StreamingUniMD, frame_scores, level_outputs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--prefix", type=int, nargs="+", default=[256, 1024], help="prefix lengths for the naive re-run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = official_preset("charades_i3d").copy(model=dict(input_dim=512, causal=True)).model
    model = UniMD(cfg).eval()
    q = torch.nn.functional.normalize(torch.randn(args.queries, cfg.text_dim), dim=-1)
    n = args.warmup + args.steps
    x = torch.nn.functional.normalize(torch.randn(1, cfg.input_dim, n + 16 * 8), dim=1)
    load0 = os.getloadavg()

    def per_step(chunk):
        st, sc, ts = StreamingUniMD(model, q), FrameScorer(model.strides, horizon=64), []
        for i, c in enumerate(x[..., :n - n % chunk].split(chunk, -1)):
            t0 = time.perf_counter()
            sc.push(*st.push(c), c.shape[-1])
            if i * chunk >= args.warmup: ts.append((time.perf_counter() - t0) / chunk)
        return statistics.median(ts), max(ts), st.cached_steps()

    rows = []
    med, worst, cached = per_step(1)
    rows.append(("streaming, 1 step per push", med, worst, f"{cached} steps"))
    med, worst, cached = per_step(16)
    rows.append(("streaming, 16 steps per push", med, worst, f"{cached} steps"))
    for T in args.prefix:
        xt = torch.nn.functional.normalize(torch.randn(1, cfg.input_dim, T), dim=1)
        ts = []
        with torch.no_grad():
            for _ in range(3):
                t0 = time.perf_counter()
                c, r = level_outputs(model, xt, q)
                frame_scores(c, r, model.strides, T, horizon=64)
                ts.append(time.perf_counter() - t0)
        rows.append((f"naive: re-run on the {T}-step prefix", statistics.median(ts), max(ts), f"{T} steps"))
    print(f"Online UniMD (charades_i3d size, causal, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters), "
          f"{args.queries} queries, torch {torch.__version__}, {args.threads} thread(s), CPU; load average {load0[0]:.2f}")
    print(f"{'mode':42s} {'ms/step (median)':>17s} {'ms (worst)':>11s}  memory")
    for name, med, worst, mem in rows: print(f"{name:42s} {med * 1e3:17.2f} {worst * 1e3:11.2f}  {mem}")


if __name__ == "__main__":
    main()
