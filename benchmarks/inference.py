"""Inference cost per minute of video on this CPU: CLIP frame features, and UniMD detection with 100 queries.

1. Feature extraction (`unimd.video.extract_clip_features`): random-weight CLIP ViT-B-32 image tower, one frame every
   4 frames at 24 fps (6 frames per second of video, 360 per minute), batches of 32, decoded with PyAV from the real
   ActivityNet clip ../shared/data/real_videos/v_GGSY1Qvo990.mp4 (320x240, 18 s) when it is there, else from a
   synthetic 320x240 video of the same length written here. Decoding + resampling alone is timed separately.
2. Detection (`unimd.detect.Detector.detect`): official-size UniMD (the charades_i3d preset with input_dim 512:
   CLIP-B features, 512-d queries, 512-wide trunk, 93 M parameters), random weights, random unit features of a
   video of 1, 4 and 16 minutes (360, 1440, 5760 steps), 100 queries in one call (50 class names + 50 sentences,
   embeddings looked up, so text encoding is not in this number), whole-video inference, Soft-NMS included.
3. Text encoding of 100 new sentences with the random-weight CLIP text tower (no cache), for comparison.

The weights are random: the timings are those of the real networks (same shapes and operations), the outputs are
meaningless. Times are medians over --repeats runs after one warm-up; the machine's load average is printed, since
other processes share the CPU.

    .venv/bin/python benchmarks/inference.py [--threads N] [--repeats 3] [--minutes 1 4 16]
"""
import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unimd.config import official_preset
from unimd.detect import Detector
from unimd.model import UniMD
from unimd.text import RANDOM_WEIGHTS, ClipTextEncoder, LookupTextEncoder
from unimd.video import ClipImageEncoder, extract_clip_features, probe_video, sampled_frames, write_test_video

ROOT = Path(__file__).resolve().parents[1]
CLIP = Path(os.environ.get("UNIMD_SHARED", ROOT.parent/"shared"))/"data"/"real_videos"/"v_GGSY1Qvo990.mp4"


def timed(fn, repeats):
    fn()                                   # warm-up (allocations, kernels, lazy builds)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 4, 16], help="video lengths for detection")
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        video = CLIP if CLIP.exists() else write_test_video(Path(tmp)/"synthetic.mp4", seconds=18.0, fps=30, size=(320, 240))
        dur = probe_video(video)["duration"]
        enc = ClipImageEncoder(weights=RANDOM_WEIGHTS)
        per_min = 60.0 / dur
        t_decode = timed(lambda: sum(1 for _ in sampled_frames(video)), args.repeats)
        t_total = timed(lambda: extract_clip_features(video, enc, progress=False), args.repeats)
        n = len(list(sampled_frames(video)))
        rows.append(("CLIP-B/32 features, every 4 frames @ 24 fps", f"{video.name}, {dur:.1f} s, {n} frames",
                     t_total, t_total * per_min))
        rows.append(("  of which decode + resample (PyAV)", "", t_decode, t_decode * per_min))

    torch.manual_seed(0)
    cfg = official_preset("charades_i3d").copy(model=dict(input_dim=512))
    model = UniMD(cfg.model)
    classes = [f"class {i}" for i in range(50)]
    sentences = [f"sentence number {i} about the video" for i in range(50)]
    table = {s: v for s, v in zip(classes + sentences, torch.nn.functional.normalize(torch.randn(100, 512), dim=1).numpy())}
    lookup = LookupTextEncoder(table)
    det = Detector(model, cfg, dict(feature_spec=dict(kind="clip", fps=24.0, feat_stride=4, num_frames=1)), text_encoder=lookup)
    for minutes in args.minutes:
        T = int(round(minutes * 60 * 6))
        feats = torch.randn(T, 512)
        t = timed(lambda: det.detect(feats, queries=sentences, classes=classes, progress=False), args.repeats)
        rows.append((f"detect, 100 queries (50 classes + 50 sentences)", f"{minutes:g} min = {T} steps, RSS {peak_rss_gb():.1f} GB",
                     t, t / minutes))

    text = ClipTextEncoder(weights=RANDOM_WEIGHTS, cache_dir=False, progress=False)
    queries = [f"a person number {i} opens the door and walks into the kitchen" for i in range(100)]
    t = timed(lambda: ClipTextEncoder(weights=RANDOM_WEIGHTS, cache_dir=False, progress=False).encode(queries), args.repeats)
    rows.append(("CLIP-B/32 text, 100 sentences (no cache)", f"{text.num_tokens(queries[0])} tokens each", t, float("nan")))

    w = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'what':<{w}}  {'input':<{w2}}  {'time (s)':>9}  {'s per minute of video':>22}")
    print("-" * (w + w2 + 37))
    for what, inp, t, tm in rows:
        print(f"{what:<{w}}  {inp:<{w2}}  {t:9.2f}  {'' if np.isnan(tm) else f'{tm:22.2f}'}")


if __name__ == "__main__":
    main()
