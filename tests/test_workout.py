"""Workout-Stitch on the real clips of ../shared/data/real_feature_demos (skipped when absent)."""
import numpy as np
import pytest
import torch

from conftest import shared_path
from unimd.config import config_from_dict
from unimd.data import DataError, build_dataset
from unimd.train import Trainer, set_deterministic
from unimd.workout import (StitchSpec, WorkoutTextEncoder, compose_queries, load_workout_clips, make_workout_stitch,
                           split_clips)


@pytest.fixture(scope="module")
def folder():
    return shared_path("data", "real_feature_demos", "bbformer_workout_i3d")


@pytest.fixture(scope="module")
def clips(folder):
    return load_workout_clips(folder)


def test_clips(clips):
    assert len(clips) == 505 and len({c.exercise for c in clips}) == 21
    lengths = [len(c.feats) for c in clips]
    assert (sum(lengths), min(lengths), max(lengths)) == (1395, 1, 39)
    assert all(np.allclose(np.linalg.norm(c.feats, axis=1), 1, atol=1e-5) for c in clips)


def test_split_by_clip(clips):
    s = split_clips(clips, 0.3, seed=0)
    train, test = {c.name for c in s["train"]}, {c.name for c in s["test"]}
    assert not train & test and len(train | test) == 505 and (len(train), len(test)) == (355, 150)
    # every exercise is in both splits
    assert {c.exercise for c in s["train"]} == {c.exercise for c in s["test"]} == {c.exercise for c in clips}
    assert split_clips(clips, 0.3, seed=0)["test"] == s["test"] and split_clips(clips, 0.3, seed=1)["test"] != s["test"]


def _rows(feats):
    return {r.tobytes() for r in np.asarray(feats, dtype=np.float32)}


def test_sequences_are_made_of_their_split_clips(folder, clips):
    spec = StitchSpec(num_train=12, num_test=6)
    tr, te = make_workout_stitch(folder, "train", spec, clips=clips), make_workout_stitch(folder, "test", spec, clips=clips)
    assert tr.class_names == sorted({c.exercise for c in clips} - set(spec.background_classes)) and len(tr.class_names) == 18
    assert not tr.clips & te.clips
    by_name = {c.name: c for c in clips}
    train_rows = set().union(*(_rows(by_name[n].feats) for n in tr.clips))
    test_rows = set().union(*(_rows(by_name[n].feats) for n in te.clips))
    assert not train_rows & test_rows
    for ds, own in ((tr, train_rows), (te, test_rows)):
        for v in ds:
            assert _rows(v.feats.T.numpy()) <= own                          # real features of the split's clips only
            for (s, e), l in zip(v.tad.segments.tolist(), v.tad.labels.tolist()):
                a, b = round(s + 0.5), round(e + 0.5)                       # whole steps [a, b)
                seg = v.feats[:, a:b].T.numpy()
                match = [c for c in clips if c.exercise == ds.class_names[l] and len(c.feats) == b - a and np.array_equal(c.feats, seg)]
                assert match, f"{v.video_id}: instance [{a}, {b}) is not a whole clip of {ds.class_names[l]}"
            for (s, e), text in zip(v.mr.segments.tolist(), v.mr.texts):
                names = WorkoutTextEncoder(ds.class_names).parse(text)
                inside = [ds.class_names[l] for (ts, te_), l in zip(v.tad.segments.tolist(), v.tad.labels.tolist()) if ts >= s - 1e-6 and te_ <= e + 1e-6]
                assert inside == names                                       # the sentence lists the instances of its moment, in order
    again = make_workout_stitch(folder, "test", spec, clips=clips)
    assert all(torch.equal(a.feats, b.feats) and a.mr.texts == b.mr.texts for a, b in zip(te, again))


def test_queries_are_unique_patterns():
    inst = [("a", 0, 2), ("b", 3, 4), ("a", 6, 9), ("c", 9, 10)]
    spec = StitchSpec(queries=(10, 10))
    q = dict(compose_queries(inst, spec, np.random.default_rng(0)))
    assert "the person does a" not in q and q["the person does b"] == [3, 4] and q["the person does a, then c"] == [6, 10]
    assert q["the person does a, then b, then a"] == [0, 9] and len(q) == 7


def test_text_encoder():
    enc = WorkoutTextEncoder(["squat", "deadlift"], dim=32, seed=0)
    e = enc(["squat", "the person does squat", "squat, then deadlift", "deadlift, then squat"])
    assert torch.equal(e[0], e[1]) and not torch.allclose(e[2], e[3]) and torch.allclose(e.norm(dim=1), torch.ones(4))
    assert torch.equal(WorkoutTextEncoder(["deadlift", "squat"], dim=32).encode(["squat"]), e[:1])
    with pytest.raises(Exception, match="unknown exercise 'jump'"): enc(["the person does jump"])


def test_trains_through_the_dataset_path(folder, tmp_path):
    set_deterministic()
    cfg = config_from_dict(dict(
        data=dict(dataset="workout_stitch", options=dict(clips=str(folder), num_train=8, num_test=4, length=[20, 40]),
                  train_split="train", val_split="test", max_seq_len=96, batch_size=4),
        model=dict(input_dim=2048, embd_dim=16, fpn_dim=16, head_dim=16, text_dim=16, query_fc_dim=16, fpn_layers=1),
        train=dict(epochs=1, warmup_epochs=0, tasks=["tad", "mr"], sampling="random"),
        test=dict(pre_nms_topk=200, max_seg_num=50)))
    with pytest.raises(DataError, match="unknown data options"):
        build_dataset(cfg.copy(data=dict(options=dict(clips=str(folder), lenght=[1, 2]))).data, "train")
    cfg = cfg.copy(data=dict(options=dict(clips=str(folder), num_train=8, num_test=4, length=[20, 40], text_dim=16)))
    tr, va = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    assert (len(tr), len(va), va.split) == (8, 4, "test")
    m = Trainer(cfg, tr, tmp_path, va, progress=False).fit()
    assert 0 <= m["tad"]["mAP"] <= 1 and 0 <= m["mr"]["R@1,IoU=0.5"] <= 1 and set(m["tad"]) >= {"mAP@0.5", "R1x@0.5"}
