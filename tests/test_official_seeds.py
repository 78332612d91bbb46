"benchmarks/official_seeds.py: the official-format view of our samples (fetch modes, dicts, which crop is called) and its statistics."
import statistics
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/"benchmarks"))
official_seeds = pytest.importorskip("official_seeds")
from unimd.data import TaskAnnotation, VideoSample  # noqa: E402


def sample(vid, tad=None, mr=None, T=20):
    ann = lambda segs, Q: TaskAnnotation(torch.tensor(segs, dtype=torch.float32).reshape(-1, 2), torch.arange(len(segs)) % Q,
                                         torch.ones(Q, 4))
    return VideoSample(vid, torch.randn(4, T), 6.0, T / 1.5, 4, 16,
                       tad=None if tad is None else ann(tad, 3), mr=None if mr is None else ann(mr, 2))


def recording_crops():
    calls = []
    def one(d, L, th, off, cr): calls.append(("one", d["video_id"], L, off)); return d
    def both(t, m, L, th, off, cr): calls.append(("both", t["video_id"], L, off)); return t, m
    return types.SimpleNamespace(truncate_feats=one, truncate_feats_tad_mr=both), calls


def test_fetch_modes_dicts_and_crops_follow_the_official_dataset():
    samples = [sample("tad_only", tad=[[1, 4]]), sample("mr_only", mr=[[2, 5]]), sample("both", tad=[[1, 3]], mr=[[0, 6]]),
               sample("both_no_tad_segments", tad=[], mr=[[2, 8]])]
    du, calls = recording_crops()
    views = {m: official_seeds.OfficialView(samples, m, du, 16) for m in ("tad", "mr", "both")}
    assert {m: [s.video_id for s in v.samples] for m, v in views.items()} == {
        "tad": ["tad_only"], "mr": ["mr_only"], "both": ["both", "both_no_tad_segments"]}
    tad_only = views["tad"][0]
    assert tad_only["mr"] is None and tad_only["tad"]["q_feats"].shape == (3, 4) and tad_only["tad"]["segments"].tolist() == [[1, 4]]
    both = views["both"][0]
    assert both["mr"]["queries"] == ["q0", "q1"] and both["mr"]["labels"].tolist() == [0]
    # a task without segments is None, as the official dataset gives it, and the crop then uses the other task only
    empty = views["both"][1]
    assert empty["tad"]["segments"] is None and empty["tad"]["feats"] is empty["mr"]["feats"]
    assert calls == [("one", "tad_only", 16, 2.0), ("both", "both", 16, 2.0), ("one", "both_no_tad_segments", 16, 2.0)]


def test_welch_and_flat_metrics():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    t, df = official_seeds.welch(a, b)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 4
    assert t == pytest.approx((2.0 - 5.0) / (va + vb) ** 0.5) and df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3))
    assert official_seeds.flat_metrics({"tad": {"mAP": 0.5, "per_class": [1]}, "mr": {"R@1": 1}}) == {"tad/mAP": 0.5, "mr/R@1": 1.0}
    assert official_seeds.seeds_of("3") == [3] and official_seeds.seeds_of("0-4") == [0, 1, 2, 3, 4]
