"Open-vocabulary splits and class restriction; the train --seen / eval --unseen / predict --online command line end to end."
import json

import numpy as np
import pytest
import torch

from unimd.cli import main
from unimd.data import DataError
from unimd.open_vocab import class_splits, class_subset, read_class_names, restrict_classes, write_class_splits
from unimd.synth import make_mdsynth


@pytest.fixture(scope="module")
def tiny():
    return make_mdsynth("tiny", seed=0, split="train")


def test_splits_are_reproducible_and_written(tmp_path, tiny):
    names = tiny.class_names
    a = class_splits(names, 0.5, n_splits=10, seed=3)
    assert a == class_splits(names, 0.5, n_splits=10, seed=3) and len({tuple(s) for s, _ in a}) > 1
    assert all(len(s) == 3 and set(s) | set(u) == set(names) and not set(s) & set(u) for s, u in a)
    files = write_class_splits(names, tmp_path, (0.75, 0.5), n_splits=10, seed=0)
    assert len(files) == 20 and read_class_names(files[0]) == class_splits(names, 0.75, 10, 0)[0][0]
    assert read_class_names(tmp_path/"unseen_50_9.txt") == class_splits(names, 0.5, 10, 0)[9][1]
    with pytest.raises(ValueError, match="cannot be split"): class_splits(names[:1], 0.5)


def test_restriction_renumbers_labels_and_drops_unseen(tmp_path, tiny):
    seen = tiny.class_names[2:]
    f = tmp_path/"seen.txt"; f.write_text("\n".join(seen) + "\n")
    tr, un = class_subset(tiny, f, "seen"), class_subset(tiny, f, "unseen", drop_sentences=False)
    assert tr.class_names == seen and un.class_names == tiny.class_names[:2]
    assert torch.equal(tr.tad_queries, tiny.tad_queries[2:]) and torch.equal(un.tad_queries, tiny.tad_queries[:2])
    for s0, s1, s2 in zip(tiny.samples, tr.samples, un.samples):
        if s0.tad is None: continue
        old = [tiny.class_names[l] for l in s0.tad.labels.tolist()]
        assert [tr.class_names[l] for l in s1.tad.labels.tolist()] == [n for n in old if n in seen]
        assert [un.class_names[l] for l in s2.tad.labels.tolist()] == [n for n in old if n not in seen]
        assert s1.tad.segments.shape[0] == len([n for n in old if n in seen])
    # training drops sentences naming an unseen class; evaluation keeps them
    texts = lambda d: [t for s in d.samples if s.mr is not None for t in s.mr.texts]
    assert not any(n in t for t in texts(tr) for n in tiny.class_names[:2]) and len(texts(un)) == len(texts(tiny))
    with pytest.raises(DataError, match="not among"): restrict_classes(tiny, ["no such class"])
    with pytest.raises(DataError, match="not found"): class_subset(tiny, tmp_path/"missing.txt")


def test_cli_open_vocab_and_online(tmp_path, capsys):
    ds = make_mdsynth("tiny", seed=0, split="val")
    seen = tmp_path/"seen.txt"; seen.write_text("\n".join(ds.class_names[:4]) + "\n")
    run = tmp_path/"run"
    rc = main(["train", "--config", "configs/mdsynth_tiny.yaml", "--out", str(run), "--no-eval", "-o", "train.epochs=1",
               "-o", "train.warmup_epochs=0", "-o", "model.causal=true", "-o", f"data.seen_classes={seen}"])
    assert rc == 0
    ck = torch.load(run/"last.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["model"]["causal"] is True and ck["meta"]["class_names"] == ds.class_names[:4]
    assert main(["eval", "--ckpt", str(run/"last.pt"), "--unseen", "--out", str(tmp_path/"u.json")]) == 0
    assert "mAP" in json.loads((tmp_path/"u.json").read_text())["tad"]
    # --tasks on a generated dataset: MD-Synth has no `tasks` data option, so only the evaluated tasks change
    assert main(["eval", "--ckpt", str(run/"last.pt"), "--tasks", "tad", "--out", str(tmp_path/"t.json")]) == 0
    assert list(json.loads((tmp_path/"t.json").read_text())) == ["tad"]
    # predict --online: the four seen classes (stored in the checkpoint) over one validation video, 8 steps per push
    np.save(tmp_path/"f.npy", ds.samples[0].feats.T.numpy())
    capsys.readouterr()
    assert main(["predict", "--ckpt", str(run/"last.pt"), "--features", str(tmp_path/"f.npy"), "--online", "--chunk", "8",
                 "--threshold", "0.05", "--csv", str(tmp_path/"s.csv")]) == 0
    out = capsys.readouterr().out
    assert f"{ds.samples[0].num_steps} steps" in out
    import pandas as pd
    scores = pd.read_csv(tmp_path/"s.csv")
    assert list(scores.columns) == ["step", "time", *ds.class_names[:4]] and len(scores) == ds.samples[0].num_steps


def test_protocol_splits_of_the_real_class_lists(tmp_path, capsys):
    "THUMOS14 (20 classes) and ActivityNet-1.3 (200) read by their own readers of the official annotation files."
    from conftest import shared_path
    from unimd.open_vocab import PROTOCOL, dataset_class_names, write_protocol_splits
    from unimd.settings import load_settings
    th = shared_path("data", "thumos14", "thumos14_actionformer_format.json")
    shared_path("data", "activitynet", "anet13", "activitynet_v1-3_action_label_mapping.json")
    s = load_settings(overrides=[f"thumos14.annotations={th}"])
    names = dataset_class_names("thumos14", s)
    assert len(names) == 20 and names[0] == "BaseballPitch" and "CricketBowling" in names
    anet = dataset_class_names("anet_ann", s)
    assert len(anet) == 200 and len(set(anet)) == 200
    out = write_protocol_splits("anet_ann", tmp_path/"anet", s)
    assert read_class_names(out/"classes.txt") == anet and PROTOCOL == dict(fractions=(0.75, 0.5), n_splits=10, seed=0)
    for frac, n_seen in ((75, 150), (50, 100)):
        seen = [read_class_names(out/f"seen_{frac}_{k}.txt") for k in range(10)]
        assert all(len(x) == n_seen and not set(x) & set(read_class_names(out/f"unseen_{frac}_{k}.txt")) for k, x in enumerate(seen))
        assert len({tuple(x) for x in seen}) == 10
    # the command: same files from the same seed
    capsys.readouterr()
    assert main(["data", "splits", "--dataset", "thumos14", "--out", str(tmp_path/"th"), "--set", f"thumos14.annotations={th}"]) == 0
    assert "thumos14: 20 classes; 10 splits of each of 75/25, 50/50 (seed 0)" in capsys.readouterr().out
    assert read_class_names(tmp_path/"th"/"seen_50_3.txt") == class_splits(names, 0.5, 10, 0)[3][0]
    assert len(list((tmp_path/"th").glob("*.txt"))) == 41
    assert main(["data", "splits", "--dataset", "mdsynth", "--out", str(tmp_path/"x")]) == 2    # not read from files
    assert "mdsynth" in capsys.readouterr().err
