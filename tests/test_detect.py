"One-call detection: inputs of every kind, both tasks in one pass, any length, windows, the `unimd predict` CLI."
import numpy as np
import pandas as pd
import pytest
import torch

from unimd.cli import main
from unimd.config import load_config, official_preset
from unimd.data import collate
from unimd.decode import predict
from unimd.detect import DetectError, Detector, _window_detections, format_detections, load_detector, read_class_file
from unimd.model import UniMD
from unimd.synth import make_mdsynth
from unimd.text import RANDOM_WEIGHTS, ClipTextEncoder
from unimd.video import CLIP_FEATURE_SPEC, write_test_video
from conftest import ROOT

COLUMNS = ["query", "task", "start", "end", "score"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mdsynth(tmp_path_factory):
    "A randomly initialised tiny MD-Synth model saved as our checkpoint (the API does not care whether it is trained)."
    torch.manual_seed(0)
    cfg = load_config(ROOT/"configs"/"mdsynth_tiny.yaml")
    ds = make_mdsynth("tiny", seed=0, split="val")
    model = UniMD(cfg.model)
    meta = dict(dataset=ds.name, class_names=ds.class_names, tad_queries=ds.tad_queries, text_spec=ds.text_spec,
                feature_spec=ds.feature_spec)
    path = tmp_path_factory.mktemp("ck")/"last.pt"
    torch.save(dict(config=cfg.to_dict(), model=model.state_dict(), ema=model.state_dict(), meta=meta, epoch=1), path)
    return path, ds


def test_detect_table_both_tasks_in_one_call(mdsynth):
    path, ds = mdsynth
    det = load_detector(path)
    v = ds[0]
    a, b = ds.class_names[:2]
    res = det.detect(v, queries=[f"{a}, then {b}", f"the person is {b}"], classes=[a, b, ds.class_names[3]], top_k=4)
    assert list(res.columns) == COLUMNS and res["score"].is_monotonic_decreasing
    assert set(res["task"]) == {"tad", "mr"} and set(res.loc[res.task == "mr", "query"]) == {f"{a}, then {b}", f"the person is {b}"}
    assert res.groupby("query").size().max() == 4
    assert (res["start"] >= 0).all() and (res["end"] <= v.duration + 1e-6).all() and (res["end"] > res["start"]).all()
    assert not np.signbit(res["start"].to_numpy()).any()                 # no -0.0 in the table
    # one forward for both tasks = the same numbers as two single-task calls
    tad_only = det.detect(v, classes=[a, b, ds.class_names[3]], top_k=4)
    pd.testing.assert_frame_equal(res[res.task == "tad"].reset_index(drop=True), tad_only, check_exact=False, rtol=1e-5)
    # classes=None: the checkpoint's classes with their stored embeddings; [] switches TAD off
    assert set(det.detect(v)["query"]) <= set(ds.class_names) and det._text_encoder is not None
    assert set(det.detect(v, queries=[a], classes=[])["task"]) == {"mr"}
    with pytest.raises(DetectError, match="nothing to detect"): det.detect(v, classes=[])


def test_inputs_arrays_files_and_orientation(mdsynth, tmp_path):
    path, ds = mdsynth
    det = load_detector(path)
    v = ds[1]
    grid = dict(fps=v.fps, feat_stride=v.feat_stride, num_frames=v.num_frames, duration=v.duration)
    ref = det.detect(v)
    for x in (v.feats.T.numpy(), v.feats.numpy(), v.feats.T.contiguous(), v.feats):
        pd.testing.assert_frame_equal(det.detect(x, **grid), ref, check_exact=False, rtol=1e-4)
    np.save(tmp_path/"f.npy", v.feats.T.numpy())
    np.savez(tmp_path/"f.npz", features=v.feats.T.numpy(), duration=v.duration)
    # a bare file takes its grid from the checkpoint's feature_spec (MD-Synth: 24 fps, stride 4, 16 frames)
    for f in ("f.npy", "f.npz"):
        out = det.detect(tmp_path/f, duration=v.duration)
        pd.testing.assert_frame_equal(out, ref, check_exact=False, rtol=1e-4)
    assert det.detect(tmp_path/"f.npz")["end"].max() <= v.duration + 1e-6
    with pytest.raises(DetectError, match=r"\(10, 7\) do not match the model: expected \(T, 32\)"): det.detect(np.zeros((10, 7)))
    with pytest.raises(DetectError, match="MD-Synth"): det.detect(tmp_path/"video.mp4")
    with pytest.raises(DetectError, match="nope.pt: checkpoint not found"): load_detector(tmp_path/"nope.pt")
    torch.save({"weights": 1}, tmp_path/"other.pt")
    with pytest.raises(DetectError, match="not a unimd checkpoint"): load_detector(tmp_path/"other.pt")


def test_long_video_and_windows(mdsynth):
    path, ds = mdsynth
    det = load_detector(path)
    torch.manual_seed(1)
    T = 2000                                           # 333 s at 6 steps/s: no length cap
    feats = torch.randn(T, 32)
    res = det.detect(feats, classes=ds.class_names[:2])
    dur = ((T - 1) * 4 + 16) / 24
    assert len(res) and res["end"].max() <= dur + 1e-6 and res["end"].max() > 150
    s = det.prepare(feats, classes=ds.class_names[:2])
    one = _window_detections(det.model, s, det.cfg, window=T, overlap=0.0, window_batch=1)["tad"]
    ref = predict(det.model, collate([s], det.cfg.data.max_seq_len, training=False), det.cfg.test)["tad"][0]
    assert torch.equal(one["segments"], ref["segments"]) and torch.equal(one["scores"], ref["scores"])
    win = det.detect(feats, classes=ds.class_names[:2], window=256, overlap=0.25)
    assert list(win.columns) == COLUMNS and win["start"].min() >= 0 and win["end"].max() <= dur + 1e-6
    assert win["start"].max() > 0.8 * dur                # later windows contribute, in video time
    assert len(win) <= det.cfg.test.max_seg_num          # one Soft-NMS over the pooled windows, same cap


def test_video_file_with_a_clip_feature_checkpoint(tmp_path):
    video = write_test_video(tmp_path/"v.mp4", seconds=1.0, fps=12)
    cfg = official_preset("charades_i3d").copy(model=dict(input_dim=512, embd_dim=32, fpn_dim=32, fpn_layers=1),
                                               data=dict(max_seq_len=64))
    torch.manual_seed(0)
    text = ClipTextEncoder(weights=RANDOM_WEIGHTS, cache_dir=False)
    meta = dict(feature_spec=dict(CLIP_FEATURE_SPEC, feat_stride=8), text_spec=text.spec, class_names=[])
    det = Detector(UniMD(cfg.model), cfg, meta, text_encoder=text, clip_weights=RANDOM_WEIGHTS)
    res = det.detect(video, queries=["a grey screen"], classes=["waiting"], progress=False)
    assert set(res["task"]) == {"tad", "mr"} and res["end"].max() <= 1.0 + 1e-6
    det2 = Detector(det.model, cfg, dict(meta, feature_spec=dict(kind="i3d", dim=2048)), text_encoder=text)
    with pytest.raises(DetectError, match="only CLIP frame features"): det2.detect(video, queries=["x"])


def test_cli_predict(mdsynth, tmp_path, capsys):
    path, ds = mdsynth
    v = ds[2]
    np.save(tmp_path/"v.npy", v.feats.T.numpy())
    (tmp_path/"classes.txt").write_text(f"# classes\n{ds.class_names[0]}\n\n{ds.class_names[1]}\n")
    assert read_class_file(tmp_path/"classes.txt") == ds.class_names[:2]
    sent = f"the person is {ds.class_names[0]}"
    rc = main(["predict", "--ckpt", str(path), "--features", str(tmp_path/"v.npy"), "--query", sent,
               "--classes", str(tmp_path/"classes.txt"), "--top", "2", "--csv", str(tmp_path/"out.csv")])
    out = capsys.readouterr().out
    assert rc == 0 and "query" in out and "score" in out and sent in out and ds.class_names[1] in out
    table = pd.read_csv(tmp_path/"out.csv")
    assert list(table.columns) == COLUMNS and set(table["query"]) == {sent, *ds.class_names[:2]}
    # the time grid of the bare .npy (the checkpoint's), header, 2 rows × 3 queries, "wrote ..."
    assert out.startswith("time grid: 24 fps, a step every 4 frames, 16 frames per step (the checkpoint's")
    assert len(out.strip().splitlines()) == 1 + 1 + 2 * 3 + 1
    assert main(["predict", "--ckpt", str(tmp_path/"missing.pt"), "--features", str(tmp_path/"v.npy")]) == 2
    assert format_detections(table.iloc[:0]) == "(no detections)"


def test_downsample_rate_of_the_feature_spec(mdsynth, tmp_path):
    path, ds = mdsynth
    det = load_detector(path)
    det.meta["feature_spec"] = dict(det.feature_spec, downsample_rate=2)
    feats = torch.randn(101, 32)
    s = det.features_of(feats)                         # native-rate array on the checkpoint's grid: every 2nd step
    assert s.num_steps == 51 and s.feat_stride == 8 and torch.allclose(s.feats[:, 1], torch.nn.functional.normalize(feats[2], dim=0))
    np.save(tmp_path/"f.npy", feats.numpy())
    assert det.features_of(tmp_path/"f.npy").num_steps == 51
    explicit = det.features_of(feats, fps=24, feat_stride=4, num_frames=16)   # an explicit grid is taken as given
    assert explicit.num_steps == 101 and explicit.feat_stride == 4


def test_cli_predict_saliency(mdsynth, tmp_path, capsys):
    "--saliency prints each sentence's most salient clips, --saliency-csv writes all of them, as detect(saliency=True) gives them."
    path, ds = mdsynth
    v = ds[2]
    np.save(tmp_path/"v.npy", v.feats.T.numpy())
    sent = f"the person is {ds.class_names[0]}"
    assert main(["predict", "--ckpt", str(path), "--features", str(tmp_path/"v.npy"), "--query", sent, "--no-classes",
                 "--saliency", "--top", "2", "--saliency-csv", str(tmp_path/"sal.csv")]) == 0
    out = capsys.readouterr().out
    assert "most salient 2-s clips" in out and "saliency" in out
    sal = pd.read_csv(tmp_path/"sal.csv")
    det = load_detector(path)
    _, want = det.detect(tmp_path/"v.npy", queries=[sent], classes=[], saliency=True, progress=False)
    assert list(sal.columns) == ["query", "clip", "start", "end", "saliency"] and len(sal) == len(want) > 0
    assert np.allclose(sal["saliency"], want["saliency"], atol=1e-6) and sal["saliency"].between(0, 1).all()
