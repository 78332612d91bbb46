"""Dataset loaders on the real annotation files of ../shared/data (skipped when absent): counts per split, subset
relations, the whole loading path on fake feature/embedding files written with the official names, and the scores
of the official evaluators on ground truth submitted as predictions."""
import json
import re
import warnings

import numpy as np
import pytest
import torch

from conftest import shared_path
from unimd.cli import main
from unimd.config import config_from_dict
from unimd.data import DataError, build_dataset, sec_to_grid
from unimd.data_check import check_files
from unimd.datasets import FeaturesOnDisk, write_fake_files
from unimd.metrics import dedup_gt, load_detection_gt
from unimd.more_datasets import read_actionformer_json, read_qvhighlights, read_tacos
from unimd.paper_datasets import (anet13_database_from_tsp, ego4d_query_string, read_anet13, read_anet_captions,
                                  read_charades_classes, read_charades_csv, read_charades_sta, read_ego4d_mq, read_ego4d_nlq)
from unimd.settings import load_settings


def data(*parts):
    return shared_path("data", *parts)


def n_tad(recs): return sum(len(r.tad_labels) for r in recs)
def n_mr(recs): return sum(len(r.mr_texts) for r in recs)
def ids(recs): return {r.video_id for r in recs}


# ---------------------------------------------------------------------------------------------------------------
# counts of the real annotation files (MANIFEST.txt, the annotation files under the official repository's `data/`), computed once and asserted exactly

def test_ego4d_counts():
    mq, nlq = data("ego4d", "mq_clip_annotations_not_filter.json"), data("ego4d", "nlq_clip_annotations_not_filter.json")
    tr, names = read_ego4d_mq(mq, "training")
    va, _ = read_ego4d_mq(mq, "validation")
    assert (len(tr), n_tad(tr), len(va), n_tad(va), len(names)) == (1506, 14243, 528, 4556, 110)
    assert sum(len(r.tad_labels) == 0 for r in tr + va) == 21
    assert {int(l) for r in tr + va for l in r.tad_labels} == set(range(110))
    te, _ = read_ego4d_mq(data("ego4d", "mq_clip_annotations_test_no_gt.json"), "test")
    assert len(te) == 488 and n_tad(te) == 0
    ntr, nva = read_ego4d_nlq(nlq, "training"), read_ego4d_nlq(nlq, "validation")
    assert (len(ntr), n_mr(ntr), len(nva), n_mr(nva)) == (998, 11291, 328, 3874)
    assert sum(len(r.mr_segments) for r in ntr + nva) == 15165
    nte = read_ego4d_nlq(data("ego4d", "nlq_clip_annotations_test_no_gt.json"), "test")
    assert (len(nte), n_mr(nte), sum(len(r.mr_segments) for r in nte)) == (333, 4004, 0)
    # MQ and NLQ share 17 training and 7 validation clips (official `train_random.py`, `train_sync.py`; the annotation files under the official repository's `data/`)
    assert (len(ids(tr) & ids(ntr)), len(ids(va) & ids(nva))) == (17, 7)
    val = json.loads(data("ego4d", "nlq_nlq_val.json").read_text())
    clips = [c for v in val["videos"] for c in v["clips"]]
    assert (len(val["videos"]), len(clips), sum(len(a["language_queries"]) for c in clips for a in c["annotations"])) == (247, 328, 3875)
    assert ids(nva) == {c["clip_uid"] for c in clips}
    assert ego4d_query_string("what did i cut.") == "what did i cut?" and ego4d_query_string("where is it??") == "where is it?"


def test_charades_counts_and_sta_subset():
    tr, te = read_charades_csv(data("charades", "Charades_v1_train.csv")), read_charades_csv(data("charades", "Charades_v1_test.csv"))
    assert (len(tr), n_tad(tr), len(te), n_tad(te)) == (7985, 49809, 1863, 16691)
    assert sum(len(r.tad_labels) > 0 for r in te) == 1814 and sum(len(r.tad_labels) == 0 for r in tr) == 174
    names = read_charades_classes(data("charades", "Charades_v1_classes.txt"))
    assert len(names) == 157 and names[0] == "Holding some clothes"
    assert {int(l) for r in tr + te for l in r.tad_labels} <= set(range(157))
    dur_tr, dur_te = {r.video_id: r.duration for r in tr}, {r.video_id: r.duration for r in te}
    str_, ste = read_charades_sta(data("charades", "charades_sta_train.txt"), dur_tr), read_charades_sta(data("charades", "charades_sta_test.txt"), dur_te)
    assert (len(str_), n_mr(str_), len(ste), n_mr(ste)) == (5338, 12408, 1334, 3720)
    # Charades-STA ⊂ Charades, split by split (read_charades_sta also refuses videos outside the split)
    assert ids(str_) <= ids(tr) and ids(ste) <= ids(te)
    with pytest.raises(DataError, match="not in the Charades annotations"):
        read_charades_sta(data("charades", "charades_sta_test.txt"), dur_tr)
    rev = lambda recs, f: sum(int((getattr(r, f)[:, 0] > getattr(r, f)[:, 1]).sum()) for r in recs)
    assert (rev(tr, "tad_segments"), rev(te, "tad_segments"), rev(str_, "mr_segments"), rev(ste, "mr_segments")) == (7, 0, 4, 0)


@pytest.fixture(scope="module")
def anet_json(tmp_path_factory):
    "ActionFormer's anet1.3_tsp_filtered.json rebuilt from the TSP ground-truth CSVs."
    db = anet13_database_from_tsp(
        {"training": data("activitynet", "anet13", "activitynet_v1-3_train_tsp_groundtruth.csv"),
         "validation": data("activitynet", "anet13", "activitynet_v1-3_valid_tsp_groundtruth.csv")},
        data("activitynet", "anet13", "activitynet_v1-3_action_label_mapping.json"))
    p = tmp_path_factory.mktemp("anet")/"anet1.3_tsp_filtered.json"
    p.write_text(json.dumps(db))
    return p


def test_anet_counts_and_captions_subset(anet_json):
    c_tr, c_va = {}, {}
    tr, names = read_anet13(anet_json, "training", c_tr)
    va, _ = read_anet13(anet_json, "validation", c_va)
    assert (len(tr), len(va), len(names)) == (10024, 4926, 200)
    # 15 410 / 7 654 action segments, of which 31 / 21 duplicates (same class, boundaries within 1e-3 s)
    assert (n_tad(tr), n_tad(va)) == (15410 - 31, 7654 - 21)
    assert c_tr == {"duplicate TAD annotations removed": 31} and c_va == {"duplicate TAD annotations removed": 21}
    assert all(r.video_id.startswith("v_") for r in tr + va)
    caps = {f: read_anet_captions(data("activitynet", "captions", f"{f}.json")) for f in ("train_modified", "val_1", "val_2")}
    assert [(len(caps[f]), n_mr(caps[f])) for f in caps] == [(10009, 37421), (4917, 17505), (4885, 17031)]
    # ActivityNet-Captions ⊂ ActivityNet-1.3, split by split
    assert ids(caps["train_modified"]) <= ids(tr) and ids(caps["val_1"]) <= ids(va) and ids(caps["val_2"]) <= ids(va)
    # the official "fake submission" is the validation ground truth: same videos, 7 654 segments
    fake = json.loads(data("activitynet", "anet13", "anet13_val_gt_as_fake_submission.json").read_text())["results"]
    assert {"v_" + v for v in fake} == ids(va) and sum(map(len, fake.values())) == 7654


def test_thumos_qvhighlights_tacos_counts():
    va, names = read_actionformer_json(data("thumos14", "thumos14_actionformer_format.json"), "validation")
    te, _ = read_actionformer_json(data("thumos14", "thumos14_actionformer_format.json"), "Test")
    assert (len(va), n_tad(va), len(te), n_tad(te), len(names)) == (200, 3007, 212, 3358, 20)
    q = {s: read_qvhighlights(data("qvhighlights", f"highlight_{s}_release.jsonl")) for s in ("train", "val", "test")}
    assert [(len(q[s]), n_mr(q[s])) for s in q] == [(7100, 7218), (1519, 1550), (1529, 1542)]
    assert [sum(len(r.mr_segments) for r in q[s]) for s in q] == [12803, 2803, 0]
    t = {s: read_tacos(data("tacos", f"{s}.json")) for s in ("train", "val", "test")}
    assert [(len(t[s]), n_mr(t[s])) for s in t] == [(75, 9790), (27, 4436), (25, 4001)]


# ---------------------------------------------------------------------------------------------------------------
# the whole loading path on fake files with the official names, for a few hundred real videos

def settings_for(tmp, **keys):
    return load_settings(overrides={"general.data_root": str(tmp), **{k: str(v) for k, v in keys.items()}})


def build(name, split, settings, **options):
    cfg = config_from_dict(dict(data=dict(dataset=name, options=options)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(cfg.data, split, settings)
    return ds, [str(w.message) for w in caught]


def outside(segs, duration): return int(((segs[:, 0] < 0) | (segs[:, 1] > duration)).sum())


def test_ego4d_loading_path(tmp_path):
    s = settings_for(tmp_path, **{"ego4d.mq_annotations": data("ego4d", "mq_clip_annotations_not_filter.json"),
                                  "ego4d.nlq_annotations": data("ego4d", "nlq_clip_annotations_not_filter.json")})
    mq, _ = read_ego4d_mq(s.path_of("ego4d", "mq_annotations"), "validation")
    nlq = read_ego4d_nlq(s.path_of("ego4d", "nlq_annotations"), "validation")
    both = sorted(ids(mq) & ids(nlq))
    chosen = both + sorted(ids(mq) - ids(nlq))[:150] + sorted(ids(nlq) - ids(mq))[:100]
    sel = set(chosen)
    assert write_fake_files("ego4d", s, "validation", dict(feature_dims=[16]), video_ids=chosen) == dict(features=257, mr=107, tad=1)
    with pytest.raises(DataError) as e:
        build("ego4d", "validation", s, feature_dims=[16])
    msg = str(e.value)
    # MQ clips read the MQ features (528), NLQ-only clips the NLQ features (328 - 7 shared)
    assert f"{528 - 157} of 528 mq features files are missing" in msg and f"{321 - 100} of 321 nlq features" in msg
    assert f"{328 - 107} of 328 MR embedding files" in msg and "allow_missing" in msg
    ds, warned = build("ego4d", "validation", s, feature_dims=[16], allow_missing=True)
    assert len(ds) == 257 and ds.pairs.counts() == dict(tad=157, mr=107, both=7, tad_only=150, mr_only=100)
    dropped = 528 + 328 - 7 - 257
    assert ds.cleaning == {"videos dropped: feature files missing (allow_missing)": dropped,
                           "TAD segments reaching outside the video kept (official rule)": sum(outside(r.tad_segments, r.duration) for r in mq if r.video_id in sel),
                           "MR moments reaching outside the video kept (official rule)": sum(outside(r.mr_segments, r.duration) for r in nlq if r.video_id in sel),
                           # ground-truth cleaning runs on every annotated video of the split, before files are looked for
                           "zero-length TAD segments kept (official rule)": sum(int((r.tad_segments[:, 0] == r.tad_segments[:, 1]).sum()) for r in mq),
                           "zero-length MR moments kept (official rule)": sum(int((r.mr_segments[:, 0] == r.mr_segments[:, 1]).sum()) for r in nlq),
                           "duplicated TAD segments kept (official rule)": 8}
    assert len(warned) == 1 and f"{dropped} videos dropped" in warned[0]
    assert ds.num_classes == 110 and ds.tad_queries.shape == (110, 512)
    # the time grid: the json's fps (30), stride 16, 16 frames; a clip with both tasks reads the MQ features
    rec = {r.video_id: r for r in mq}[both[0]]
    v = ds[ds.index_of(both[0])]
    assert v.feats.shape == (16, int(rec.duration * 30 / 16)) and isinstance(ds.samples[0].feats, FeaturesOnDisk)
    assert torch.allclose(v.tad.segments, torch.tensor(sec_to_grid(rec.tad_segments, 30.0, 16, 16), dtype=torch.float32))
    assert torch.allclose(v.feats.norm(dim=0), torch.ones(v.feats.shape[1]), atol=1e-3)
    assert ds.feature_of[both[0]].sources[0].kind == "mq" and ds.feature_of[chosen[-1]].sources[0].kind == "nlq"
    nrec = {r.video_id: r for r in nlq}[both[0]]
    assert v.mr.texts == nrec.mr_texts and v.mr.queries.shape == (len(nrec.mr_texts), 512)
    stored = np.load(s.path_of("ego4d", "nlq_text_embeddings")/f"{both[0]}.npz")["queries"]
    assert list(stored) == [ego4d_query_string(q) for q in nrec.mr_texts]
    entries = ds.mr_queries_table()
    assert len(entries) == n_mr(r for r in nlq if r.video_id in sel)
    assert {"clip_uid", "annotation_uid", "annotation_idx"} <= set(entries.columns)
    # TAD scored on its own ground truth (duplicates removed as the evaluator does): mAP 1 and Recall@1x 1
    gt = dedup_gt(load_detection_gt(ds.tad_database()))
    assert len(gt) == n_tad(r for r in mq if r.video_id in sel) - 31   # 31 duplicate annotations in these clips
    preds = [dict(video_id=v, segments=torch.tensor(g[["t-start", "t-end"]].values), scores=torch.ones(len(g)),
                  labels=torch.tensor(g["label"].values)) for v, g in gt.groupby("video-id")]
    m = ds.evaluate({"tad": preds})["tad"]
    assert m["mAP"] == pytest.approx(1.0) and m["R1x@0.5"] == pytest.approx(1.0)


CHARADES_TEST = lambda: {"charades.tad_test_annotations": data("charades", "Charades_v1_test.csv"),
                         "charades.class_names": data("charades", "Charades_v1_classes.txt"),
                         "charades.mr_test_annotations": data("charades", "charades_sta_test.txt")}


def test_loader_errors_name_the_file(tmp_path):
    s = settings_for(tmp_path, **CHARADES_TEST())
    sta = read_charades_sta(data("charades", "charades_sta_test.txt"),
                            {r.video_id: r.duration for r in read_charades_csv(data("charades", "Charades_v1_test.csv"))})
    vids = sorted(ids(sta))[:40]
    write_fake_files("charades", s, "Test", dict(feature_dims=[16]), video_ids=vids)
    ok, _ = build("charades", "Test", s, feature_dims=[16], allow_missing=True)
    assert len(ok) == 40
    bad = s.path_of("charades", "i3d_features")/f"{vids[3]}_rgb_flow.npy"
    np.save(bad, np.zeros((12, 7), np.float32))
    with pytest.raises(DataError, match=rf"{bad.name}: i3d features have shape \(12, 7\), expected \(T, 16\)"):
        build("charades", "Test", s, feature_dims=[16], allow_missing=True)
    np.save(bad, np.ones((12, 16), np.float32))
    emb = s.path_of("charades", "mr_text_embeddings")/f"{vids[5]}.npz"
    z = dict(np.load(emb)); z["queries"] = np.array(["something else"] + list(z["queries"][1:]))
    np.savez(emb, **z)
    with pytest.raises(DataError, match=rf"{vids[5]}.npz: query 0 is 'something else' but the annotation gives"):
        build("charades", "Test", s, feature_dims=[16], allow_missing=True)
    emb.unlink()
    ds, warned = build("charades", "Test", s, feature_dims=[16], allow_missing=True)
    assert ds.cleaning["MR annotations dropped: embedding files missing (allow_missing)"] == 1
    assert ds[ds.index_of(vids[5])].mr is None and ds[ds.index_of(vids[5])].tad is not None
    np.savez(s.path_of("charades", "tad_text_embeddings"), features=np.zeros((157, 512), np.float32))
    with pytest.raises(DataError, match=r"have shape \(157, 512\), expected \(512, 157\)"):
        build("charades", "Test", s, feature_dims=[16], allow_missing=True)
    with pytest.raises(DataError, match="unknown data option 'feature'"):
        build("charades", "Test", s, feature="i3d")


def test_charades_i3d_clip_loading_path(tmp_path):
    s = settings_for(tmp_path, **CHARADES_TEST())
    te = read_charades_csv(data("charades", "Charades_v1_test.csv"))
    vids = [r.video_id for r in te[:300]]
    opts = dict(features="i3d+clip", feature_dims=[16, 8])
    write_fake_files("charades", s, "Test", opts, video_ids=vids, seed=1)
    # the CLIP features of one video are one step shorter: the concatenation is truncated to the shorter
    clip = s.path_of("charades", "clip_features")/f"{vids[0]}.npz"
    x = np.load(clip)["features"]; np.savez(clip, features=x[:-1])
    ds, warned = build("charades", "Test", s, allow_missing=True, **opts)
    recs = {r.video_id: r for r in te}
    sta_vids = ids(read_charades_sta(data("charades", "charades_sta_test.txt"), {r.video_id: r.duration for r in te}))
    assert len(ds) == 300 and ds.pairs.counts()["both"] == len(set(vids) & sta_vids) and ds.pairs.mr_only == []
    v0 = ds[0]
    assert v0.feats.shape == (24, len(x) - 1) and ds.tad_queries.shape == (157, 512)
    assert torch.allclose(v0.feats[:16].norm(dim=0), torch.ones(len(x) - 1), atol=1e-3)
    # official rule: actions past the video's length are kept (and counted)
    beyond = sum(outside(recs[v].tad_segments, recs[v].duration) for v in vids)
    assert ds.cleaning["TAD segments reaching outside the video kept (official rule)"] == beyond > 0
    for v in vids[:20]:
        r, smp = recs[v], ds.samples[ds.index_of(v)]
        assert smp.fps == 24 and smp.feat_stride == 4 and smp.num_frames == 16
        assert torch.allclose(smp.tad.segments, torch.tensor(sec_to_grid(r.tad_segments, 24, 4, 16), dtype=torch.float32))
        assert smp.tad.labels.tolist() == r.tad_labels.tolist()
    assert ds.feature_spec["dim"] == 24 and ds.feature_spec["kind"] == "i3d+clip" and ds.text_spec["kind"] == "precomputed"


def test_anet_loading_path(tmp_path, anet_json):
    s = settings_for(tmp_path, **{"anet.tad_annotations": anet_json,
                                  "anet.mr_train_annotations": data("activitynet", "captions", "train_modified.json")})
    caps = read_anet_captions(data("activitynet", "captions", "train_modified.json"))
    vids = sorted(ids(caps))[:200]
    write_fake_files("anet", s, "training", dict(feature_dims=[16]), video_ids=vids, seed=2)
    # features that stop early (missing frames): training drops GT starting after them and clamps the ends
    tr, _ = read_anet13(anet_json, "training")
    recs = {r.video_id: r for r in tr}
    short = [v for v in vids if len(recs[v].tad_segments) and (recs[v].tad_segments[:, 0] > recs[v].duration / 2).any()][:5]
    feat_dir = s.path_of("anet", "features")
    for v in short:
        x = np.load(feat_dir/f"{v}.npy")
        np.save(feat_dir/f"{v}.npy", x[:len(x) // 3])
    ds, warned = build("anet", "training", s, feature_dims=[16], allow_missing=True)
    assert len(ds) == 200 and ds.pairs.counts() == dict(tad=200, mr=200, both=200, tad_only=0, mr_only=0)
    assert ds.tad_queries.shape == (1, 512) and ds.class_names == ["an action (average of the 200 classes)"]
    assert all((x.tad.labels == 0).all() for x in ds.samples)
    # expected effect of the `features` rule, computed independently from each file's length
    drop = clamp = 0
    for v in vids:
        T = len(np.load(feat_dir/f"{v}.npy", mmap_mode="r"))
        g = sec_to_grid(recs[v].tad_segments, 30, 16, 16)
        drop += int((g[:, 0] >= T).sum()); clamp += int(((g[:, 0] < T) & (g[:, 1] > T)).sum())
        smp = ds.samples[ds.index_of(v)]
        assert len(smp.tad.segments) == int((g[:, 0] < T).sum()) and (smp.tad.segments[:, 1] <= T).all()
    assert drop > 0 and clamp > 0
    assert ds.cleaning["TAD segments starting after the last feature dropped"] == drop
    assert ds.cleaning["TAD segments ends clamped to the last feature"] == clamp
    assert (s.path_of("anet", "mr_text_embeddings")/f"{vids[0]}_training.npz").exists()
    c = {r.video_id: r for r in caps}[vids[1]]
    assert ds[ds.index_of(vids[1])].mr.texts == c.mr_texts    # sentences as written, leading spaces included


def test_more_datasets_loading_path(tmp_path):
    s = settings_for(tmp_path, **{"thumos14.annotations": data("thumos14", "thumos14_actionformer_format.json"),
                                  "qvhighlights.val_annotations": data("qvhighlights", "highlight_val_release.jsonl"),
                                  "tacos.test_annotations": data("tacos", "test.json")})
    te, _ = read_actionformer_json(s.path_of("thumos14", "annotations"), "test")
    write_fake_files("thumos14", s, "test", dict(feature_dims=[8]), video_ids=[r.video_id for r in te[:30]])
    th, _ = build("thumos14", "test", s, feature_dims=[8], allow_missing=True)
    assert len(th) == 30 and th.tad_queries.shape == (20, 512) and th.samples[0].feat_stride == 4
    qv = read_qvhighlights(s.path_of("qvhighlights", "val_annotations"))
    write_fake_files("qvhighlights", s, "val", dict(feature_dims=[8, 4]), video_ids=[r.video_id for r in qv[:100]])
    q, _ = build("qvhighlights", "val", s, feature_dims=[8, 4], allow_missing=True)
    assert len(q) == 100 and q[0].feats.shape == (12, 75) and q.pairs.counts()["mr"] == 100
    assert torch.allclose(q[0].mr.segments, torch.tensor(np.asarray(qv[0].mr_segments) / 2 - 0.5, dtype=torch.float32))
    assert (s.path_of("qvhighlights", "features")/"slowfast_features"/f"{qv[0].video_id}.npz").exists()
    write_fake_files("tacos", s, "test", dict(feature_dims=[8]))
    tc, _ = build("tacos", "test", s, feature_dims=[8])
    dropped = tc.cleaning.get("MR queries dropped with all their moments", 0)
    assert len(tc) == 25 and sum(x.mr.num_queries for x in tc.samples) == 4001 - dropped


@pytest.fixture(scope="module")
def charades_test(tmp_path_factory):
    "Settings whose data_root holds fake 4-d features and embeddings for the whole Charades Test split."
    s = settings_for(tmp_path_factory.mktemp("charades"), **CHARADES_TEST())
    assert write_fake_files("charades", s, "Test", dict(feature_dims=[4])) == dict(features=1863, mr=1334, tad=1)
    return s


def test_data_check_command(tmp_path, capsys, charades_test):
    keys = ["--set", f"general.data_root={tmp_path}", *[x for k, v in CHARADES_TEST().items() for x in ("--set", f"{k}={v}")]]
    assert main(["data", "check", "--dataset", "charades", "--split", "Test", *keys]) == 1
    out = capsys.readouterr().out
    assert re.search(r"Test\s+i3d features\s+1863\s+0\s+1863\s", out) and re.search(r"Test\s+MR embedding\s+1334\s+0\s+1334\s", out)
    rep = {r.kind: r for r in check_files("charades", charades_test, ["Test"])}
    assert rep["i3d features"].found == 1863 and rep["MR embedding"].found == 1334 and rep["TAD class embeddings"].found == 1
    keys[1] = f"general.data_root={charades_test.get('general', 'data_root')}"
    assert main(["data", "check", "--dataset", "charades", "--split", "test", *keys]) == 0
    assert "all files found" in capsys.readouterr().out
    assert main(["data", "check", "--dataset", "nope", *keys]) == 2


# ---------------------------------------------------------------------------------------------------------------
# scores of the official evaluators (unimd.evaluators) on ground truth submitted as predictions

def _gt_as_predictions(ds):
    "Each query's ground-truth moments (seconds) as its predictions, score 1, labelled with the model's query index."
    model = lambda v, q: ds.mr_kept[v].index(q) if v in ds.mr_kept else q
    return [dict(video_id=v, segments=torch.tensor(g[["t-start", "t-end"]].values), scores=torch.ones(len(g)),
                 labels=torch.tensor([model(v, q) for q in g["query"]])) for v, g in ds.mr_table().groupby("video-id")]


def test_charades_scored_by_the_official_evaluators(tmp_path):
    pytest.importorskip("unimd.evaluators", reason="unimd.evaluators (notebook 42) not exported")
    s = settings_for(tmp_path, **CHARADES_TEST())
    te = read_charades_csv(data("charades", "Charades_v1_test.csv"))
    write_fake_files("charades", s, "Test", dict(feature_dims=[4]), video_ids=[r.video_id for r in te[:300]])
    ds, _ = build("charades", "Test", s, feature_dims=[4], allow_missing=True)
    n = len(ds.mr_table())
    assert len(ds) == 300 and ds.pairs.counts() == dict(tad=300, mr=210, both=210, tad_only=90, mr_only=0) and n == 560
    r = ds.evaluate({"mr": _gt_as_predictions(ds)})["mr"]
    assert r == {f"R@{k},IoU={t}": pytest.approx(n / (n + 1e-5)) for k in (1, 5) for t in (0.5, 0.7)}
    tad = [dict(video_id=v, segments=torch.tensor(g[["t-start", "t-end"]].values), scores=torch.ones(len(g)),
                labels=torch.tensor(g["label"].values)) for v, g in dedup_gt(load_detection_gt(ds.tad_database())).groupby("video-id")]
    m = ds.evaluate({"tad": tad})
    # per-frame mAP (Charades_v1_localize, 25 frames per video) over all 1 863 videos of the csv, 300 predicted
    assert m["tad"] == {"mAP": pytest.approx(0.18813177707529813, abs=1e-12), "WAP": pytest.approx(0.2057360504372897, abs=1e-12)}
    assert m["tad_detection"]["mAP"] == pytest.approx(1.0)


def test_ego4d_nlq_anet_captions_qvhighlights_scored_by_the_official_evaluators(tmp_path, anet_json):
    pytest.importorskip("unimd.evaluators", reason="unimd.evaluators (notebook 42) not exported")
    s = settings_for(tmp_path, **{"ego4d.mq_annotations": data("ego4d", "mq_clip_annotations_not_filter.json"),
                                  "ego4d.nlq_annotations": data("ego4d", "nlq_clip_annotations_not_filter.json"),
                                  "ego4d.nlq_val_official": data("ego4d", "nlq_nlq_val.json"),
                                  "anet.tad_annotations": anet_json,
                                  "anet.mr_val2_annotations": data("activitynet", "captions", "val_2.json"),
                                  "qvhighlights.val_annotations": data("qvhighlights", "highlight_val_release.jsonl")})
    nlq = read_ego4d_nlq(s.path_of("ego4d", "nlq_annotations"), "validation")
    write_fake_files("ego4d", s, "validation", dict(feature_dims=[4], tasks=["mr"]), video_ids=[r.video_id for r in nlq[:60]])
    ds, _ = build("ego4d", "validation", s, feature_dims=[4], tasks=["mr"], allow_missing=True)
    assert len(ds) == 60 and len(ds.mr_queries_table()) == n_mr(nlq[:60]) == 779
    # nlq_val.json's own windows as predictions (so the entries point at the right annotations): every query is
    # found except the 77 whose window has zero length, which no prediction overlaps (predicted as [s, s + 1])
    val = json.loads(data("ego4d", "nlq_nlq_val.json").read_text())
    lq = {(c["clip_uid"], a["annotation_uid"]): a["language_queries"] for v in val["videos"] for c in v["clips"] for a in c["annotations"]}
    def window(v, u, i):
        st, en = lq[(v, u)][i]["clip_start_sec"], lq[(v, u)][i]["clip_end_sec"]
        return [st, en if en > st else st + 1]
    preds = [dict(video_id=v, scores=torch.ones(len(g)), labels=torch.tensor(g["query"].values),
                  segments=torch.tensor([window(v, u, i) for u, i in zip(g["annotation_uid"], g["annotation_idx"])], dtype=torch.float64))
             for v, g in ds.mr_queries_table().groupby("video-id")]
    r = ds.evaluate({"mr": preds})["mr"]
    assert r == {**{f"R@{k},IoU={t}": (779 - 77) / 779 for k in (1, 3, 5) for t in (0.3, 0.5, 0.01)}, "mIoU": pytest.approx((779 - 77) / 779)}

    caps = read_anet_captions(data("activitynet", "captions", "val_2.json"))
    write_fake_files("anet", s, "validationV2", dict(feature_dims=[4], tasks=["mr"]), video_ids=[r.video_id for r in caps[:80]])
    an, _ = build("anet", "val", s, feature_dims=[4], tasks=["mr"], allow_missing=True)
    r = an.evaluate({"mr": _gt_as_predictions(an)})["mr"]
    n = n_mr(caps[:80])
    # scored against the whole val_2.json (17 031 sentences), as the official script does
    assert an.split == "validationV2" and r["R@1,IoU=0.7"] == pytest.approx(float(np.float32(n) / np.float32(17031)))
    assert r["mIoU"] == pytest.approx(n / 17031, rel=1e-6)

    qv = read_qvhighlights(s.path_of("qvhighlights", "val_annotations"))
    write_fake_files("qvhighlights", s, "val", dict(feature_dims=[4, 4]), video_ids=[r.video_id for r in qv[:50]])
    q, _ = build("qvhighlights", "val", s, feature_dims=[4, 4], allow_missing=True)
    r = q.evaluate({"mr": _gt_as_predictions(q)})["mr"]
    n = n_mr(qv[:50])
    assert r["R1@0.7"] == pytest.approx(n / 1550) and r["mAP"] == pytest.approx(n / 1550)


def test_trains_and_evaluates_from_feature_files(tmp_path):
    "A FeatureDataset (features read per fetch) through the Trainer: training batches, evaluation, the official metrics."
    pytest.importorskip("unimd.evaluators", reason="unimd.evaluators (notebook 42) not exported")
    from unimd.train import Trainer, set_deterministic
    s = settings_for(tmp_path, **CHARADES_TEST())
    vids = [r.video_id for r in read_charades_csv(data("charades", "Charades_v1_test.csv"))[:16]]
    opts = dict(feature_dims=[16], text_dim=32, allow_missing=True)
    write_fake_files("charades", s, "Test", opts, video_ids=vids)
    set_deterministic()
    cfg = config_from_dict(dict(
        data=dict(dataset="charades", options=opts, train_split="Test", val_split="Test", max_seq_len=128, batch_size=4),
        model=dict(input_dim=16, embd_dim=16, fpn_dim=16, head_dim=32, text_dim=32, query_fc_dim=32, fpn_layers=1),
        train=dict(epochs=1, warmup_epochs=0, tasks=["tad", "mr"], sampling="random"),
        test=dict(pre_nms_topk=100, max_seg_num=20)))
    ds, _ = build("charades", "Test", s, **opts)
    m = Trainer(cfg, ds, tmp_path/"run", ds, progress=False).fit()
    assert set(m) == {"tad", "tad_detection", "mr"} and set(m["tad"]) == {"mAP", "WAP"}
    assert set(m["mr"]) == {f"R@{k},IoU={t}" for k in (1, 5) for t in (0.5, 0.7)}
    assert 0 <= m["tad"]["mAP"] < 0.2 and 0 <= m["tad_detection"]["mAP"] <= 1
    # fewer labels (Table 1d) keeps a file-backed dataset file-backed
    from unimd.fusion import apply_data_ratios
    half = apply_data_ratios(ds, {"tad": 0.5, "mr": 0.5}, seed=1)
    assert type(half) is type(ds) and torch.is_tensor(half[0].feats) and half[0].feats.shape == ds[0].feats.shape
    assert len(half.pairs.tad) == round(0.5 * len(ds.pairs.tad)) and len(half) == len(ds)


def test_thumos14_ambiguous_segments_from_the_official_annotation(tmp_path):
    "ActionFormer's json has no Ambiguous segments; the adapter reads them from the official annotation for the online metrics."
    import pandas as pd
    csv = data("thumos14", "test_Annotation.csv")
    s = settings_for(tmp_path, **{"thumos14.annotations": data("thumos14", "thumos14_actionformer_format.json")})
    te, _ = read_actionformer_json(s.path_of("thumos14", "annotations"), "test")
    amb = pd.read_csv(csv).query("type == 'Ambiguous'")
    vids = [r.video_id for r in te if r.video_id in set(amb.video)][:5] + [r.video_id for r in te if r.video_id not in set(amb.video)][:3]
    write_fake_files("thumos14", s, "test", dict(feature_dims=[8]), video_ids=vids)
    without, _ = build("thumos14", "test", s, feature_dims=[8], allow_missing=True)     # the default file is not there
    assert without.ambiguous is None
    th, _ = build("thumos14", "test", settings_for(tmp_path, **{"thumos14.annotations": s.path_of("thumos14", "annotations"),
                                                                "thumos14.test_ambiguous": csv}), feature_dims=[8], allow_missing=True)
    assert sorted(th.ambiguous) == sorted(vids[:5])
    for v in vids[:5]: assert th.ambiguous[v].tolist() == amb[amb.video == v][["start", "end"]].to_numpy().tolist()
