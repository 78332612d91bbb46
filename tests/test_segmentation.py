"Action segmentation: labels with background, hand-computed accuracy / edit / F1@k, dense scores from the pyramid."
import numpy as np
import pytest
import torch

from unimd.config import load_config
from unimd.model import UniMD
from unimd.segmentation import (BACKGROUND, dense_scores, edit_score, f1_counts, frame_accuracy, label_segments,
                                labels_from_segments, levenshtein, segment, segmentation_metrics, segments_frame,
                                step_labels)
from unimd.synth import make_mdsynth
from conftest import ROOT

A, B, C, _ = 0, 1, 2, BACKGROUND


def test_step_labels_threshold_and_background_scores():
    p = np.array([[0.9, 0.1], [0.4, 0.45], [0.2, 0.7], [0.5, 0.5]])
    assert step_labels(p).tolist() == [0, _, 1, 0]                       # ties go to the first class; 0.5 ≥ 0.5
    assert step_labels(p, 0.3).tolist() == [0, 1, 1, 0]
    assert step_labels(p, np.array([0.95, 0.0, 0.8, 0.1])).tolist() == [_, 1, _, 0]
    assert step_labels(np.zeros((3, 0))).tolist() == [_, _, _]
    with pytest.raises(ValueError): step_labels(np.zeros(5))


def test_segments_and_levenshtein():
    assert label_segments([_, _, A, A, B, _, B]) == [(A, 2, 4), (B, 4, 5), (B, 6, 7)]
    assert label_segments([]) == [] and label_segments([A]) == [(A, 0, 1)]
    assert levenshtein("kitten", "sitting") == 3 and levenshtein([], [1, 2]) == 2 and levenshtein([1, 2], [1, 2]) == 0


def test_hand_computed_metrics():
    gt = [_, _, A, A, A, B, B, _, _, C]
    pred = [_, A, A, A, _, B, B, B, _, _]
    assert frame_accuracy(pred, gt) == 60.0
    assert edit_score(pred, gt) == pytest.approx(100 * (1 - 1 / 3))
    assert f1_counts(pred, gt, 0.5) == (2, 0, 1)                         # IoU 0.5 (A) and 2/3 (B); C missed
    assert f1_counts(pred, gt, 0.6) == (1, 1, 2)
    m = segmentation_metrics([(pred, gt)], overlaps=(0.1, 0.25, 0.5, 0.6))
    assert m == pytest.approx({"accuracy": 60.0, "edit": 200 / 3, "F1@10": 80.0, "F1@25": 80.0, "F1@50": 80.0, "F1@60": 40.0})
    # a second prediction of an already matched segment is a false positive; the wrong class never matches
    assert f1_counts([A, A, _, A, A], [A] * 5, 0.1) == (1, 1, 0)
    assert f1_counts([B] * 5, [A] * 5, 0.1) == (0, 1, 1)
    assert f1_counts([A, A], [_, _], 0.1) == (0, 1, 0) and edit_score([_, _], [_, _]) == 100.0


def test_aggregation_over_videos():
    v1 = ([A, A, _, _], [A, A, _, _])       # perfect: tp 1
    v2 = ([_, _, _, _, _, _], [B, B, B, _, C, C])   # all missed: fn 2
    m = segmentation_metrics([v1, v2])
    # accuracy over all 10 steps (4 + 1 correct), edit averaged per video (100 and 0), F1 from summed counts
    assert m["accuracy"] == 50.0 and m["edit"] == 50.0
    assert m["F1@50"] == pytest.approx(100 * 2 * 1 * (1 / 3) / (1 + 1 / 3))
    with pytest.raises(ValueError, match="video 0"): segmentation_metrics([([A], [A, A])])


def test_ground_truth_per_step_prefers_the_shortest_action():
    # a long action 0 over steps 0..9 with a short action 1 inside it, and an equally long tie annotated later
    segs = [[0, 9], [3, 4], [6, 7], [6, 7]]
    assert labels_from_segments(segs, [0, 1, 2, 3], 11).tolist() == [0, 0, 0, 1, 1, 0, 2, 2, 0, 0, _]
    assert labels_from_segments(np.zeros((0, 2)), [], 3).tolist() == [_, _, _]


def test_dense_scores_from_a_model():
    torch.manual_seed(0)
    cfg = load_config(ROOT/"configs"/"mdsynth_tiny.yaml")
    model = UniMD(cfg.model).eval()
    ds = make_mdsynth("tiny", seed=0, split="val")
    from unimd.detect import Detector
    det = Detector(model, cfg, dict(class_names=ds.class_names, tad_queries=ds.tad_queries, text_spec=ds.text_spec,
                                    feature_spec=ds.feature_spec))
    samples = [det.prepare(v) for v in ds.samples[:4]]
    full = dense_scores(model, samples, cfg.data.max_seq_len)
    fine = dense_scores(model, samples, cfg.data.max_seq_len, "finest")
    for s, f, g in zip(samples, full, fine):
        assert f.shape == (s.num_steps, len(ds.class_names)) and (f >= g).all() and (f <= 1).all() and (f > 0).all()
    # level 0 (stride 1) is the head's own per-step probability
    from unimd.data import collate
    with torch.no_grad():
        out = model(collate([samples[0]], cfg.data.max_seq_len, training=False))["tad"]
    assert np.allclose(fine[0], torch.sigmoid(out.cls_logits[0][0, :samples[0].num_steps]).numpy(), atol=1e-6)
    # a single sample gives the batched numbers
    assert np.allclose(dense_scores(model, samples[2], cfg.data.max_seq_len), full[2], atol=1e-6)
    r = segment(det, ds[0], background=0.0)
    assert r["labels"].shape == (ds[0].num_steps,) and (r["labels"] >= 0).all() and r["classes"] == ds.class_names
    df = segments_frame(r["labels"], r["classes"], ds[0].fps, ds[0].feat_stride, ds[0].num_frames, ds[0].duration)
    assert list(df.columns) == ["query", "start", "end"] and df["start"].min() == 0.0 and df["end"].max() <= ds[0].duration
    with pytest.raises(ValueError, match="reduce"): dense_scores(model, samples[0], cfg.data.max_seq_len, "mean")
