"Decoding a known offset map, masks through the whole model, parameter counts, bad input."
import math
from types import SimpleNamespace

import pytest
import torch

from unimd.config import ModelConfig, official_preset
from unimd.config import TestConfig as DecodeConfig
from unimd.data import DataError, TaskAnnotation, VideoSample, check_sample, collate, segments_to_grid
from unimd.decode import decode_task, predict
from unimd.model import TaskOutput, UniMD, count_parameters

SMALL = ModelConfig(input_dim=12, embd_dim=16, fpn_dim=16, head_dim=8, text_dim=8, query_fc_dim=8, max_seq_len=64)


def video(T, vid="v", nq=2, C=12, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return VideoSample(vid, torch.randn(C, T, generator=g), 30.0, T * 16 / 30, 16, 16,
                       tad=TaskAnnotation(torch.tensor([[1., 4.]]), torch.tensor([0]), torch.randn(3, D, generator=g)),
                       mr=TaskAnnotation(torch.tensor([[2., 5.]] * nq), torch.arange(nq), torch.randn(nq, D, generator=g)))


def test_decode_known_offset_map():
    logits = torch.full((2, 8, 2), -30.0)
    logits[0, 5, 1] = 2.0          # row 0, query 1, t=5
    logits[1, 2, 0] = 1.0          # row 1, query 0, t=2
    off = torch.zeros(2, 8, 2, 2)
    off[0, 5, 1] = torch.tensor([1.5, 2.5]); off[1, 2, 0] = torch.tensor([1.0, 0.5])
    out = TaskOutput([logits], [off], [torch.ones(2, 8, dtype=torch.bool)], torch.tensor([0, 1]))
    tb = SimpleNamespace(rows=torch.tensor([0, 1]), num_queries=2, valid_queries=lambda: torch.ones(2, 2, dtype=torch.bool))
    meta = [dict(video_id="a", fps=8.0, feat_stride=4, num_frames=16, duration=20.0),
            dict(video_id="b", fps=8.0, feat_stride=4, num_frames=16, duration=1.5)]
    res = decode_task(out, tb, meta, [2], DecodeConfig())
    assert res[0]["video_id"] == "a" and res[0]["labels"].tolist() == [1]
    assert res[0]["segments"].tolist() == [[4.5, 8.5]]                 # grid [7, 15] → ((7·4+8)/8, (15·4+8)/8)
    # row 1: grid [2, 5] → [2.0, 3.5] s, clipped to the 1.5 s duration
    assert res[1]["segments"].tolist() == [[1.5, 1.5]] and math.isclose(res[1]["scores"].item(), 1 / (1 + math.exp(-1)), rel_tol=1e-6)


def test_masked_points_and_padded_queries_never_decode():
    logits = torch.full((1, 8, 3), 5.0)
    out = TaskOutput([logits], [torch.ones(1, 8, 3, 2)], [torch.tensor([[True] * 3 + [False] * 5])], torch.tensor([0]))
    tb = SimpleNamespace(rows=torch.tensor([0]), num_queries=3, valid_queries=lambda: torch.tensor([[True, True, False]]))
    res = decode_task(out, tb, [dict(video_id="a", fps=1.0, feat_stride=1, num_frames=0, duration=100.0)], [1],
                      DecodeConfig(min_score=0.0))
    starts = res[0]["segments"][:, 0] + 1          # decoded start = t - 1
    assert set(res[0]["labels"].tolist()) == {0, 1} and starts.max() <= 2


def test_official_parameter_counts():
    for name, total in {"ego4d": 90.77, "charades_i3d": 92.34, "charades_i3d_clip": 93.13, "anet": 91.16}.items():
        c = count_parameters(UniMD(official_preset(name).model))
        assert round(c["total"] / 1e6, 2) == total, (name, c)


def test_padding_never_leaks_through_the_model():
    torch.manual_seed(0)
    m = UniMD(SMALL).eval()
    v = video(37)
    with torch.no_grad():
        a = m(collate([v], 64, training=False))
        b = m(collate([v, video(100, "w", seed=1)], 64, training=False))   # padded to 128 next to a longer video
    for t in ("tad", "mr"):
        for la, lb, ma in zip(a[t].cls_logits, b[t].cls_logits, a[t].masks):
            n = int(ma[0].sum())
            assert torch.allclose(la[0, :n], lb[0, :n, :la.shape[-1]], atol=1e-5)


def test_short_and_long_videos_at_inference():
    torch.manual_seed(0)
    m = UniMD(SMALL).eval()
    for T in (3, 1000):   # shorter than the largest stride; longer than max_seq_len: padded to ⌈T/32⌉·32 and run whole
        res = predict(m, collate([video(T)], 64, training=False), DecodeConfig(max_seg_num=5))
        assert set(res) == {"tad", "mr"} and len(res["tad"][0]["scores"]) <= 5


def test_bad_input_is_reported_before_work():
    v = video(20)
    check_sample(v, 12, 8)
    with pytest.raises(DataError, match="'v'.*13 channels.*input_dim=12|'v'.*12 channels.*input_dim=13"):
        check_sample(v, 13, 8)
    bad = video(20); bad.feats[3, 7] = float("nan")
    with pytest.raises(DataError, match="NaN/Inf.*\\[7\\]"):
        check_sample(bad, 12, 8)
    with pytest.raises(DataError, match="query embeddings are 8-d.*text_dim=16"):
        check_sample(v, 12, 16)
    empty = video(20); empty.mr = TaskAnnotation(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0, 8))
    with pytest.raises(DataError, match="mr queries must be \\(Q ≥ 1, D\\)"):
        check_sample(empty, 12, 8)
    with pytest.raises(DataError, match="exceeds max_seq_len"):
        collate([video(100)], 64, training=True)
    with pytest.raises(ValueError, match="12 channels, model.input_dim=16"):
        UniMD(ModelConfig(input_dim=16, embd_dim=16, fpn_dim=16, head_dim=8, text_dim=8, query_fc_dim=8))(collate([v], 64, False))


def test_bad_segments_are_dropped_and_counted():
    g, l, n = segments_to_grid([[1, 2], [3, 3], [4, 2], [50, 60], [-5, -1], [9, 12]], range(6), 30, 10, 16, 16)
    assert n == 4 and l.tolist() == [0, 5]
    assert torch.allclose(g[1], torch.tensor([9 * 30 / 16 - 0.5, 10 * 30 / 16 - 0.5]))   # clipped to the duration


@pytest.mark.parametrize("chunk", [1, 3, 512])
@pytest.mark.parametrize("cfg", [DecodeConfig(max_seg_num=7), DecodeConfig(nms_method="hard", max_seg_num=7),
                                 DecodeConfig(multiclass_nms=False, max_seg_num=7)])
def test_decoding_many_batches_together_equals_decoding_each(chunk, cfg):
    # evaluation decodes the candidates of many videos in one NMS call: the same detections, in the same order
    from unimd.decode import predict_batches
    torch.manual_seed(0)
    m = UniMD(SMALL).eval()
    batches = [collate([video(40 + 9 * i, f"v{i}", nq=1 + i % 3, seed=i) for i in range(j, j + 2)], 64, training=False)
               for j in (0, 2, 4)]
    each = {t: [d for b in batches for d in predict(m, b, cfg)[t]] for t in ("tad", "mr")}
    together = predict_batches(m, iter(batches), cfg, chunk=chunk)
    assert set(together) == {"tad", "mr"}
    for t in ("tad", "mr"):
        assert [d["video_id"] for d in together[t]] == [f"v{i}" for i in range(6)]
        for a, b in zip(each[t], together[t]):
            assert len(a["scores"]) > 0
            assert torch.equal(a["segments"], b["segments"]) and torch.equal(a["scores"], b["scores"])
            assert torch.equal(a["labels"], b["labels"])
            assert ("saliency" in a) == ("saliency" in b) == (t == "mr")
            if t == "mr": assert torch.equal(a["saliency"], b["saliency"])


def test_inference_without_autograd_equals_the_autograd_forward():
    # without autograd the model runs in place (masked convs, channel LayerNorm, head trunks, regression scale) and
    # caches the TAD regression kernels: every output must be bit for bit the autograd path's, on padded rows too
    torch.manual_seed(0)
    m = UniMD(SMALL).eval()
    batch = collate([video(37), video(100, "w", nq=3, seed=1)], 64, training=False)
    ref = m(batch)
    assert ref["tad"].cls_logits[0].requires_grad
    with torch.no_grad():
        first, again = m(batch), m(batch)          # the second call reuses the cached TAD kernels
    for out in (first, again):
        for t in ("tad", "mr"):
            for name in ("cls_logits", "offsets", "masks"):
                for a, b in zip(getattr(ref[t], name), getattr(out[t], name)):
                    assert torch.equal(a.detach(), b), (t, name)
