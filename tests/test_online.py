"Causal model (no output at or before t depends on input after t), streaming = whole-video causal run, online metrics."
import numpy as np
import pytest
import torch

from dataclasses import replace

from unimd.config import ModelConfig, config_from_dict
from unimd.data import DataError, grid_to_sec
from unimd.detect import DetectError, Detector
from unimd.evaluators import frame_ap, frame_labels, online_frame_map
from unimd.model import UniMD
from unimd.more_datasets import read_thumos14_ambiguous
from unimd.online import (FrameScorer, RunSegmenter, StreamingUniMD, ambiguous_steps, frame_scores, level_outputs,
                          online_eval)
from unimd.synth import make_mdsynth


def small(causal=True, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(input_dim=8, embd_dim=16, fpn_dim=16, head_dim=12, text_dim=12, query_fc_dim=12,
                                max_seq_len=64), **kw}, causal=causal)
    m = UniMD(cfg).eval()
    with torch.no_grad():  # random weights everywhere (the official init zeroes biases, layer scales start at 1e-6)
        for name, p in m.named_parameters():
            if "att" not in name: p.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("kw", [{}, {"reg_with_query": False}, {"fpn_layers": 1, "head_kernel_size": 5}])
def test_perturbing_the_future_never_changes_the_past(kw):
    model, g = small(**kw), torch.Generator().manual_seed(1)
    x, q = torch.randn(2, 8, 96, generator=g), torch.randn(4, 12, generator=g)
    cls, reg = level_outputs(model, x, q)
    for t in (0, 1, 31, 32, 33, 70, 94):
        x2 = x.clone()
        x2[..., t + 1:] += torch.randn(x2[..., t + 1:].shape, generator=g)
        cls2, reg2 = level_outputs(model, x2, q)
        for l, s in enumerate(model.strides):
            n = t // s + 1
            assert torch.equal(cls[l][:, :n], cls2[l][:, :n]), (t, l)
            assert torch.equal(reg[l][:, :n], reg2[l][:, :n]), (t, l)
        # the test can fail: the steps after t do change
        assert not torch.allclose(cls[0][:, t + 1:], cls2[0][:, t + 1:])


def test_offline_model_sees_the_future_and_is_unchanged_by_the_flag():
    off, on = small(causal=False), small(causal=True)
    assert [n for n, _ in off.named_parameters()] == [n for n, _ in on.named_parameters()]
    x, q = torch.randn(1, 8, 64), torch.randn(2, 12)
    x2 = x.clone(); x2[..., 40:] += 1
    assert not torch.equal(level_outputs(off, x, q)[0][0][:, 39], level_outputs(off, x2, q)[0][0][:, 39])


@pytest.mark.parametrize("sizes", [[1] * 77, [5] * 15 + [2], [40, 1, 36], [77]])
def test_streaming_equals_whole_video_causal_run(sizes):
    model = small(seed=2)
    x, q = torch.randn(2, 8, 77), torch.randn(3, 12)
    cls, reg = level_outputs(model, x, q)
    st, scorer, got, scores = StreamingUniMD(model, q), FrameScorer(model.strides, horizon=40), [], []
    for chunk in x.split(sizes, -1):
        out = st.push(chunk)
        got.append(out)
        scores.append(scorer.push(*out, chunk.shape[-1]))
        # bounded memory: each op holds at most k - 1 + s - 1 steps, the scorer the horizon's points
        assert all(w.buf.shape[-1] <= w.k + w.s - 2 for w in st.windows.values())
        assert all(len(p[3]) <= 41 for p in scorer.points)
    for l in range(len(cls)):
        c, r = torch.cat([o[0][l] for o in got], 1), torch.cat([o[1][l] for o in got], 1)
        assert c.shape == cls[l].shape and r.shape == reg[l].shape
        assert (c - cls[l]).abs().max() <= 1e-5 and (r - reg[l]).abs().max() <= 1e-5
    whole = frame_scores(cls, reg, model.strides, 77, horizon=40)
    assert (torch.cat(scores, 1) - whole).abs().max() <= 1e-5


def test_streaming_needs_a_causal_model():
    with pytest.raises(ValueError, match="causal"): StreamingUniMD(small(causal=False), torch.randn(1, 12))
    det = Detector(small(causal=False), None, meta=dict(class_names=["a"], tad_queries=[[0.0] * 12],
                                                        feature_spec=dict(fps=30.0, feat_stride=16, num_frames=16)))
    with pytest.raises(DetectError, match="model.causal"): next(det.stream([np.zeros((4, 8))]))


def test_detector_stream_reports_scores_and_ended_instances():
    model, emb = small(seed=3), torch.randn(2, 12)
    det = Detector(model, None, meta=dict(class_names=["a", "b"], tad_queries=emb.tolist(),
                                          feature_spec=dict(fps=30.0, feat_stride=15, num_frames=15)))
    feats = torch.randn(50, 8)
    scores = [s.scores["a"] for s in det.stream(feats.split(7))]
    thr = float(np.median(scores))          # random weights: a threshold that gives runs
    steps = list(det.stream(feats.split(7), threshold=thr))
    assert [s.step for s in steps[:50]] == list(range(50)) and steps[1].time == pytest.approx((15 + 7.5) / 30)
    with pytest.raises(DetectError, match="stream chunk 0"): next(det.stream([np.zeros((4, 5))]))
    # instances from the scores: a run of steps ≥ threshold, reported at the first step below it
    seg = RunSegmenter(thr)
    s = torch.tensor([[[s.scores["a"], s.scores["b"]] for s in steps[:50]]])
    expect = seg.push(s) + seg.flush()
    got = [(e["query"], e["start"], e["end"]) for st in steps for e in st.ended]
    sec = lambda g: max(0.0, (g * 15 + 7.5) / 30)
    assert got and sorted(got) == sorted((["a", "b"][q], sec(a - 0.5), sec(b + 0.5)) for _, q, a, b, _, _ in expect)


def test_config_key():
    assert ModelConfig().causal is False
    assert config_from_dict({"model": {"causal": True}}).model.causal is True


def test_frame_ap_hand_computed():
    # positives at ranks 1 and 3 of 5: AP = (1 + 2/3) / 2; w = 3/2 → calibrated precision at rank 3 = 2 / (2 + 1/1.5)
    s, y = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0]
    assert frame_ap(s, y) == pytest.approx(5 / 6) and frame_ap(s, y, calibrated=True) == pytest.approx(7 / 8)
    # a tie between a positive and a negative enters together: P = 1/2 at R = 1/2
    assert frame_ap([0.9, 0.9, 0.1], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert np.isnan(frame_ap([0.3, 0.2], [0, 0]))


def test_online_frame_map_ignores_ambiguous_frames_and_empty_classes():
    s = np.array([[0.95, 0.1, 0.0], [0.9, 0.8, 0.0], [0.2, 0.7, 0.0], [0.1, 0.6, 0.0]])
    y = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    r = online_frame_map(s, y, ambiguous=np.array([1, 0, 0, 0], bool))
    assert r["AP_per_class"][0] == 1.0 and r["AP_per_class"][1] == pytest.approx(0.5) and np.isnan(r["AP_per_class"][2])
    assert r["mAP"] == pytest.approx(0.75)
    # without the ambiguous mark, frame 0 is a false positive ranked first for class 0
    assert online_frame_map(s, y)["AP_per_class"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="bool"): online_frame_map(s, y.astype(int))
    with pytest.raises(ValueError, match="ambiguous"): online_frame_map(s, y, ambiguous=np.zeros(3, bool))



def test_ambiguous_frames_are_left_out_of_the_online_metrics(tmp_path):
    # THUMOS14's Ambiguous segments: the official per-class layout, and the CSV of the whole annotation
    (tmp_path/"Ambiguous_test.txt").write_text("video_test_0000004  1.0 2.5\nvideo_test_0000004 10 12\n\nvideo_test_0000007 0.0 0.4\n")
    txt = read_thumos14_ambiguous(tmp_path/"Ambiguous_test.txt")
    assert txt["video_test_0000004"].tolist() == [[1.0, 2.5], [10.0, 12.0]] and txt["video_test_0000007"].tolist() == [[0.0, 0.4]]
    (tmp_path/"a.csv").write_text("video,type,type_idx,start,end\nv1,CricketBowling,23,0.2,1.1\nv1,Ambiguous,0,3.0,4.5\n")
    assert {k: v.tolist() for k, v in read_thumos14_ambiguous(tmp_path/"a.csv").items()} == {"v1": [[3.0, 4.5]]}
    (tmp_path/"bad.txt").write_text("v1 1.0\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'video start end'"): read_thumos14_ambiguous(tmp_path/"bad.txt")
    # a step is ambiguous by the rule that makes a step positive: its grid position lies inside the segment
    class Grid: fps, feat_stride, num_frames = 1.0, 1.0, 1.0      # step i is at grid i, second i + 0.5
    assert ambiguous_steps(Grid, [[2.5, 4.5]], 8).tolist() == [False, False, True, True, True, False, False, False]
    assert not ambiguous_steps(Grid, None, 3).any()
    # online_eval on one video with 3 ambiguous steps = online_frame_map of its scores with those steps masked by hand
    ds = make_mdsynth("tiny", seed=0, split="val")
    s = ds.samples[0]
    model = small(seed=3, input_dim=32, head_dim=32, text_dim=32, query_fc_dim=32, max_seq_len=160)
    one = ds.with_samples([x if x.video_id == s.video_id else replace(x, tad=None) for x in ds.samples])
    with torch.no_grad():
        f = frame_scores(*level_outputs(model, s.feats[None], s.tad.queries), model.strides, s.num_steps, horizon=64)[0].numpy()
    lab = frame_labels(np.arange(s.num_steps), s.tad.segments.numpy(), s.tad.labels.numpy(), len(ds.class_names))
    c = int(np.ceil(float(s.tad.segments[0, 0])))               # steps c, c + 1, c + 2 of the first instance
    mask = np.isin(np.arange(s.num_steps), [c, c + 1, c + 2])
    one.ambiguous = {s.video_id: grid_to_sec(np.array([[c - 0.3, c + 2.3]]), s.fps, s.feat_stride, s.num_frames)}
    got, plain = online_eval(model, one, "causal"), online_eval(model, ds.with_samples(one.samples), "causal")
    want = online_frame_map(f, lab, mask)
    assert abs(got["frame_mAP"] - want["mAP"]) < 1e-12 and abs(got["frame_cAP"] - want["cAP"]) < 1e-12
    assert abs(plain["frame_mAP"] - online_frame_map(f, lab)["mAP"]) < 1e-12 and got["frame_mAP"] != plain["frame_mAP"]
    one.ambiguous = None                                    # THUMOS14 without its ambiguous file: said, not silent
    with pytest.warns(UserWarning, match="ambiguous segments is missing"): online_eval(model, one, "causal")
