"""The user journey from one's own videos to moments, end to end through the command line: videos with moving shapes
(PyAV) → `unimd features` (a seeded random CLIP tower) → Charades-format annotations → `unimd train` (a tiny model) →
`unimd predict --video` on a held-out video → detections inside its duration. Plus the feature-spec checks."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("av")

from unimd.cli import main
from unimd.dataset_files import ClassEmbeddings
from unimd.video import write_shapes_video

RED, BLUE = (230, 40, 40), (40, 40, 230)
# video id → (events (start s, end s, colour), split); classes: c000 = red square crossing, c001 = blue square crossing
VIDEOS = {"v1": ([(0.5, 1.5, RED)], "train"), "v2": ([(1.0, 2.5, BLUE)], "train"),
          "v3": ([(0.2, 1.0, RED), (1.6, 2.6, BLUE)], "train"), "v4": ([(1.2, 2.2, RED)], "test")}
SECONDS = 3.0

CONFIG = """
name: own_videos
data:
  dataset: charades
  options: {features: clip, num_frames: 1, tasks: [tad], text_dim: 16}
  train_split: Train
  val_split: Test
  max_seq_len: 32
  batch_size: 1
model:
  input_dim: 512
  embd_dim: 16
  fpn_dim: 16
  head_dim: 16
  text_dim: 16
  query_fc_dim: 16
  backbone_arch: [2, 2, 3]
  convnext_depths: [1, 1, 1]
  regression_range: [[0, 4], [4, 8], [8, 16], [16, 10000]]
train:
  seed: 3
  learning_rate: 0.001
  warmup_epochs: 1
  epochs: 2
  tasks: [tad]
test:
  pre_nms_topk: 100
  max_seg_num: 20
"""


def write_project(root):
    "Videos, a held-out video, Charades-format annotations, class embeddings, settings.ini and the config."
    vids = root/"videos"; vids.mkdir()
    for i, (vid, (events, _)) in enumerate(VIDEOS.items()):
        write_shapes_video(vids/f"{vid}.mp4", events, seconds=SECONDS, seed=i)
    (vids/"broken.mp4").write_text("this is not a video")
    held_out = write_shapes_video(root/"new_video.mp4", [(0.8, 2.0, RED)], seconds=SECONDS, seed=9)
    ann = root/"annotations"; ann.mkdir()
    code = {RED: "c000", BLUE: "c001"}
    for split in ("train", "test"):
        rows = [dict(id=vid, actions=";".join(f"{code[c]} {s} {e}" for s, e, c in ev), length=SECONDS)
                for vid, (ev, sp) in VIDEOS.items() if sp == split]
        pd.DataFrame(rows).to_csv(ann/f"{split}.csv", index=False)
    (ann/"classes.txt").write_text("c000 red square crossing\nc001 blue square crossing\n")
    ClassEmbeddings(root/"text"/"classes.npz", 2, 16, layout="columns").write_fake(np.random.default_rng(0))
    (root/"settings.ini").write_text(
        "[general]\ndata_root = .\ndevice = cpu\noutput_dir = runs\nclip_model = ViT-B-32\nclip_weights = random\ncache_dir = cache\n"
        "[charades]\ntad_train_annotations = annotations/train.csv\ntad_test_annotations = annotations/test.csv\n"
        "class_names = annotations/classes.txt\nmr_train_annotations = none\nmr_test_annotations = none\n"
        "i3d_features = none\nclip_features = features\ntad_text_embeddings = text/classes.npz\nmr_text_embeddings = none\n")
    (root/"own_videos.yaml").write_text(CONFIG)
    return held_out


def check_run_folder(run, printed):
    "The run folder of the training above: resolved config, command, versions, per-epoch log with the real lr, curves."
    from unimd.config import load_config
    from unimd.train import warmup_cosine
    assert {p.name for p in run.iterdir() if not p.name.startswith(".")} == {"config.yaml", "run.json", "log.jsonl", "curves.png", "last.pt", "ema.pt"}
    cfg = load_config(run/"config.yaml")              # reusable with --config: the same resolved config
    ck = torch.load(run/"last.pt", map_location="cpu", weights_only=False)
    assert cfg.to_dict() == ck["config"] and cfg.train.epochs == 2 and cfg.train.warmup_epochs == 1
    info = json.loads((run/"run.json").read_text())
    assert info["command"].startswith("unimd train --config ") and info["torch"] == torch.__version__
    assert "git_commit" in info and info["epochs_label"] == "epoch 3/3 (2 + 1 warm-up)"
    log = [json.loads(l) for l in (run/"log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and all(r["of"] == 3 for r in log)
    # the lr of each epoch's last update: 3 training videos, batch 1 → 3 updates per epoch, 1 warm-up epoch
    f = warmup_cosine(3, 9, cfg.train.eta_min / cfg.train.learning_rate)
    assert [r["lr"] for r in log] == pytest.approx([cfg.train.learning_rate * f(s) for s in (2, 5, 8)])
    assert log[0]["lr"] == pytest.approx(1e-3) and log[2]["lr"] > 0
    assert "epoch 3/3 (2 + 1 warm-up): loss" in printed
    assert (run/"curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_own_videos_to_moments(tmp_path, capsys, one_torch_thread):
    held_out = write_project(tmp_path)
    ini = ["--settings", str(tmp_path/"settings.ini")]
    feats = tmp_path/"features"
    # 1. features: the broken file gets its line, the others are written in the official layout with their grid
    assert main(["features", "--videos", str(tmp_path/"videos"), "--out", str(feats), "--clip-weights", "random", *ini]) == 1
    out = capsys.readouterr()
    assert "skipped broken.mp4: not a readable video" in out.err
    assert "3 videos extracted" not in out.out and "4 videos extracted, 0 already there, 1 unreadable" in out.out
    with np.load(feats/"v1.npz") as z:
        assert z["features"].shape == (18, 512) and z["fps"] == 24 and z["feat_stride"] == 4 and z["num_frames"] == 1
        assert abs(float(z["duration"]) - SECONDS) < 1e-6
    spec = json.loads((feats/"feature_spec.json").read_text())
    assert (spec["model"], spec["fps"], spec["feat_stride"], spec["normalization"]) == ("ViT-B-32", 24.0, 4, "l2 per step")
    # resumable: nothing is recomputed
    assert main(["features", "--videos", str(tmp_path/"videos"), "--out", str(feats), "--clip-weights", "random", *ini]) == 1
    assert "0 videos extracted, 4 already there, 1 unreadable" in capsys.readouterr().out
    # 2. train a tiny model on them (Charades-format annotations of one's own videos)
    run = tmp_path/"run"
    assert main(["train", "--config", str(tmp_path/"own_videos.yaml"), "--out", str(run), "--no-eval", *ini]) == 0
    ck = torch.load(run/"last.pt", map_location="cpu", weights_only=False)
    fs = ck["meta"]["feature_spec"]
    assert (fs["kind"], fs["model"], fs["fps"], fs["feat_stride"], fs["num_frames"], fs["normalization"]) == \
        ("clip", "ViT-B-32", 24, 4, 1, "l2 per step")
    check_run_folder(run, capsys.readouterr().out)
    # 3. predict on a video the model never saw: detections of its classes, inside the video
    csv = tmp_path/"detections.csv"
    assert main(["predict", "--ckpt", str(run/"last.pt"), "--video", str(held_out), "--clip-weights", "random",
                 "--csv", str(csv), *ini]) == 0
    df = pd.read_csv(csv)
    assert len(df) > 0 and set(df["query"]) <= {"red square crossing", "blue square crossing"} and set(df["task"]) == {"tad"}
    assert (df["start"] >= 0).all() and (df["end"] <= SECONDS + 1e-6).all() and (df["start"] < df["end"]).all()
    assert "red square crossing" in capsys.readouterr().out
    # 4. features made with another recipe are refused, naming the difference
    assert main(["features", "--videos", str(held_out), "--out", str(tmp_path/"f30"), "--fps", "30",
                 "--clip-weights", "random", *ini]) == 0
    capsys.readouterr()
    assert main(["predict", "--ckpt", str(run/"last.pt"), "--features", str(tmp_path/"f30"/"new_video.npz"), *ini]) == 2
    err = capsys.readouterr().err
    assert "fps: trained with 24, given 30.0" in err and "unimd features" in err
