"""Task-fusion samplers: the official epoch structure (../shared/fixtures/sampler), batch-composition statistics on
a synthetic index, nested data-volume subsets, determinism, and distributed shards."""
import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from conftest import shared_path
from unimd.data import TaskAnnotation, VideoDataset, VideoSample
from unimd.distributed import shard
from unimd.fusion import apply_data_ratios, kept_videos, regime_stages
from unimd.train import PLANNERS


def index(n_tad, n_mr, n_both, empty_tad=()):
    q = torch.zeros(1, 4)
    ann = lambda n: TaskAnnotation(torch.tensor([[1., 3.]] * n).reshape(-1, 2), torch.zeros(n, dtype=torch.long), q)
    v = lambda vid, **kw: VideoSample(vid, torch.zeros(4, 40), 30, 20, 16, 16, **kw)
    vids = [v(f"tadonly_{i:02d}", tad=ann(0 if i in empty_tad else 1)) for i in range(n_tad)]
    vids += [v(f"mronly_{i:02d}", mr=ann(1)) for i in range(n_mr)]
    vids += [v(f"both_{i:02d}", tad=ann(1), mr=ann(1)) for i in range(n_both)]
    return VideoDataset("idx", "train", vids)


def cfg(**kw):
    return SimpleNamespace(**{"tasks": ("tad", "mr"), "sync_keep_surplus": False, **kw})


def plan(ds, sampling, epoch=0, bs=2, **kw):
    return PLANNERS[sampling](ds, cfg(**kw), bs, torch.Generator().manual_seed(epoch))


def kinds(ds, it):
    "An iteration's composition, in the fixture's notation, e.g. 'mr_only:mr+tad_only:tad'."
    name = lambda vid: vid.rsplit("_", 1)[0].replace("tadonly", "tad_only").replace("mronly", "mr_only")
    return "+".join(sorted(f"{name(ds[i].video_id)}:{'&'.join(t)}" for i, t in it if t))


def test_official_epoch_structure(tmp_path):
    fx = json.loads(shared_path("fixtures", "sampler", "sampler_main.json").read_text())
    ix = fx["index"]
    ds = index(len(ix["tad_only"]), len(ix["mr_only"]), len(ix["both"]), empty_tad=(29,))
    assert ds[29].video_id == ix["tad_video_without_annotations"][0]
    s = fx["sync"]
    for e in range(2):
        ours = plan(ds, "sync", e)
        assert len(ours) == s["iterations_per_epoch"] == s["len_tad_loader"] + s["len_both_loader"]
        # the same kinds of iterations, in the same numbers (up to which diff iteration draws the empty video)
        ours_c = Counter(kinds(ds, it) for it in ours)
        assert ours_c["both:tad&mr+both:tad&mr"] == fx["summary"]["sync"][e]["iteration_compositions"]["both:tad&mr+both:tad&mr"]
        assert sum(v for k, v in ours_c.items() if k.startswith("mr_only:mr+mr_only:mr+tad_only:tad")) == s["len_tad_loader"]
        # each exclusive loader draws min(|TAD-only|, |MR-only|) distinct videos per epoch
        drawn = [ds[i].video_id for it in ours for i, _ in it]
        assert sum(v.startswith("tadonly") for v in drawn) == s["fix_size_min_len"] == len({v for v in drawn if v.startswith("tadonly")})
        assert sum(v.startswith("mronly") for v in drawn) == s["fix_size_min_len"]
    for sampling, tasks, key in [("random", ("tad", "mr"), "all"), ("individual", ("tad",), "tad"), ("individual", ("mr",), "mr")]:
        assert len(plan(ds, sampling, tasks=tasks)) == fx["random"][key]["loader_len"]


def test_sync_every_iteration_carries_both_tasks():
    ds = index(37, 21, 9)
    for e in range(3):
        p = plan(ds, "sync", e, bs=4)
        assert all({t for _, ts in it for t in ts} == {"tad", "mr"} for it in p)
        assert len(p) == 21 // 4 + 9 // 4
        assert len({i for it in p for i, _ in it if ds[i].video_id.startswith("tadonly")}) == 4 * (21 // 4)


def test_sync_keep_surplus_covers_the_larger_side():
    ds = index(37, 21, 9)
    p = plan(ds, "sync", bs=4, sync_keep_surplus=True)
    tad_seen = {i for it in p for i, ts in it if ts == ("tad",)}
    assert len(p) == 37 // 4 + 9 // 4 and len(tad_seen) == 36          # all but the incomplete last batch
    assert all({t for _, ts in it for t in ts} == {"tad", "mr"} for it in p)
    # one side without exclusive videos: official trains only the shared ones; keep_surplus adds single-task batches
    sub = index(10, 0, 6)
    assert len(plan(sub, "sync", bs=2)) == 3
    extra = plan(sub, "sync", bs=2, sync_keep_surplus=True)
    assert len(extra) == 3 + 5 and sum(all(ts == ("tad",) for _, ts in it) for it in extra) == 5


def test_alternating_strictly_alternates_and_balances():
    ds = index(37, 21, 9)
    p = plan(ds, "alternating", bs=4)
    tasks = [{t for _, ts in it for t in ts} for it in p]
    assert tasks == [{"tad"}, {"mr"}] * (len(p) // 2)
    assert len(p) == 2 * ((37 + 9) // 4)
    mr_seen = Counter(i for it, t in zip(p, tasks) if t == {"mr"} for i, _ in it)
    assert set(mr_seen) == {i for i, s in enumerate(ds.samples) if s.mr is not None}   # the smaller stream repeats


def test_random_mixes_tasks_and_individual_uses_one():
    ds = index(37, 21, 9)
    p = plan(ds, "random", bs=4)
    assert len(p) == (37 + 21 + 9) // 4
    mixed = sum(len({t for _, ts in it for t in ts}) == 2 for it in p)
    assert 0 < mixed < len(p)
    for t in ("tad", "mr"):
        assert all(ts == (t,) for it in plan(ds, "individual", tasks=(t,)) for _, ts in it)


def test_plans_are_deterministic_per_epoch_and_vary_across_epochs():
    ds = index(37, 21, 9)
    for s in ("random", "sync", "alternating"):
        assert plan(ds, s, 3) == plan(ds, s, 3) and plan(ds, s, 3) != plan(ds, s, 4)


def test_nested_data_volume_subsets():
    ds = index(37, 21, 9)
    for t in ("tad", "mr"):
        sets = [set(kept_videos(ds, t, r, seed=7)) for r in (0.25, 0.5, 0.75, 1.0)]
        assert all(a < b for a, b in zip(sets, sets[1:]))
        n = sum(s.task(t) is not None for s in ds.samples)
        assert [len(x) for x in sets] == [round(r * n) for r in (0.25, 0.5, 0.75, 1.0)]
    sub = apply_data_ratios(ds, {"tad": 0.25, "mr": 1.0}, seed=7)
    assert sum(s.tad is not None for s in sub.samples) == round(0.25 * 46)
    assert sum(s.mr is not None for s in sub.samples) == 30 and len(sub) == len(ds)   # MR labels untouched
    assert apply_data_ratios(ds, {"tad": 1.0, "mr": 1.0}, seed=7) is ds


def test_shards_partition_every_iteration():
    ds = index(37, 21, 9, empty_tad=(3,))
    for s in ("random", "sync", "alternating"):
        for it in plan(ds, s, bs=4):
            valid = [(pos, i, ts) for pos, (i, ts) in enumerate(it) if ts]
            parts = [shard(valid, r, 2) for r in range(2)]
            assert sorted(parts[0] + parts[1]) == sorted(valid) and not set(parts[0]) & set(parts[1])


def test_regime_stages():
    from unimd.config import Config
    c = Config(name="b")
    assert [s.train.tasks for s in regime_stages("mr->tad", c)] == [("mr",), ("tad",)]
    assert regime_stages("alternating", c)[0].train.sampling == "alternating"
    with pytest.raises(ValueError, match="unknown regime"):
        regime_stages("both", c)
