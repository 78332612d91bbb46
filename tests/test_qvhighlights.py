"QVHighlights in full: the official evaluation (MR + highlight detection), model saliency, the submission files, and the path train → evaluate → submit on a fixture in the official layout."
import json
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, shared_path
from unimd.cli import main
from unimd.config import load_config
from unimd.data import build_dataset
from unimd.datasets import write_fake_files
from unimd.decode import clip_saliency
from unimd.evaluators import (QVH_CODALAB_FILES, _load_jsonl, eval_qvhighlights, qvh_clip_labels,
                              qvh_ground_truth_as_predictions, qvhighlights_mr_eval, validate_qvhighlights_submission,
                              write_codalab_submission, write_jsonl)
from unimd.settings import load_settings
from unimd.train import Trainer, set_deterministic

FIX = ROOT/"tests"/"fixtures"/"qvhighlights"
BRIEF_KEYS = ["MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP", "MR-full-mAP@0.5", "MR-full-mAP@0.75", "MR-long-mAP",
              "MR-middle-mAP", "MR-short-mAP", "HL-min-Fair-mAP", "HL-min-Fair-Hit1", "HL-min-Good-mAP",
              "HL-min-Good-Hit1", "HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1"]


def line(qid, windows, saliency, vid="v"):
    return {"qid": qid, "query": "q", "vid": vid, "pred_relevant_windows": windows, "pred_saliency_scores": saliency}


def gt_line(qid, windows, duration, clip_ids, scores, vid="v"):
    return {"qid": qid, "query": "q", "vid": vid, "duration": duration, "relevant_windows": windows,
            "relevant_clip_ids": clip_ids, "saliency_scores": scores}


# -- the evaluator, hand-computed ---------------------------------------------------------------------------------

def test_hand_computed_mr_and_hl():
    # one query of an 8-s video (4 clips); worked out in nbs/42_evaluators.ipynb
    gt = [gt_line(1, [[2, 8]], 8, [1, 2, 3], [[4, 2, 1], [2, 3, 4], [0, 1, 2]])]
    r = eval_qvhighlights([line(1, [[0, 4, 0.4], [2, 8, 0.9]], [0.1, 0.9, 0.5, 0.5])], gt)
    assert list(r) == ["brief", "HL-min-Fair", "HL-min-Good", "HL-min-VeryGood", "full", "long", "middle", "short"]
    assert list(r["brief"]) == BRIEF_KEYS
    b = r["brief"]
    assert b["MR-full-mAP"] == b["MR-full-mAP@0.5"] == b["MR-short-mAP"] == 100.0
    assert b["MR-full-R1@0.5"] == 0.0                        # R1 reads the first listed window, [0, 4]
    assert np.isnan(b["MR-middle-mAP"]) and np.isnan(b["MR-long-mAP"])
    assert (b["HL-min-Fair-mAP"], b["HL-min-Good-mAP"], b["HL-min-VeryGood-mAP"]) == (77.78, 55.56, 44.44)
    assert r["HL-min-Good"] == {"HL-mAP": 55.56, "HL-Hit1": 100.0}
    assert list(r["full"]["MR-mAP"]) == [f"{t:.2f}".rstrip("0").rstrip(".") if t != 0.5 else "0.5"
                                         for t in np.linspace(0.5, 0.95, 10)] + ["average"]


def test_hand_computed_two_queries_ranges_and_r1():
    # q1: windows A=[0,6] (short), B=[20,40] (middle); listed [20,40,.5], [0,4,.9], [50,60,.1]
    # AP ranks [0,4] first: tIoU 4/6 with A (a hit up to θ=0.65), then [20,40] hits B, then a miss.
    # q2: one long window [0,100]; listed [0,100] (perfect): AP 1, R1 hit
    gt = [gt_line(1, [[0, 6], [20, 40]], 150, [0], [[4, 4, 4]]), gt_line(2, [[0, 100]], 150, [0], [[0, 0, 0]], vid="w")]
    pred = [line(1, [[20, 40, 0.5], [0, 4, 0.9], [50, 60, 0.1]], [1.0]), line(2, [[0, 100, 0.3]], [1.0], vid="w")]
    r = eval_qvhighlights(pred, gt)
    thetas = [float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10)]
    ap1 = [1.0 if t <= 4 / 6 else 0.25 for t in thetas]     # hits at ranks 1-2; above 2/3 only rank 2: P=1/2 at R=1/2
    assert r["full"]["MR-mAP"]["0.5"] == 100.0 and r["full"]["MR-mAP"]["0.7"] == 62.5
    assert r["full"]["MR-mAP"]["average"] == float(f"{100 * np.mean([(a + 1) / 2 for a in ap1]):.2f}")
    assert r["full"]["MR-R1"]["0.95"] == 100.0              # both first-listed windows are exact
    # short: only A counts for q1 ([0,4] hits it at θ ≤ 0.65 at rank 1; q2 has no short window)
    assert r["short"]["MR-mAP"]["0.6"] == 100.0 and r["short"]["MR-mAP"]["0.7"] == 0.0
    assert r["short"]["MR-R1"]["0.5"] == 0.0                # R1 of the range: [20,40] against A
    assert r["middle"]["MR-mAP"]["0.95"] == 50.0 and r["long"]["MR-mAP"]["average"] == 100.0
    # highlights: q1's only clip 0 is VeryGood for all; q2's clip 0 is 0 for all, so AP 0 and Hit1 0
    assert r["HL-min-VeryGood"] == {"HL-mAP": 50.0, "HL-Hit1": 50.0}


def test_saliency_cut_padded_hit_past_the_end_and_ties():
    gt = [gt_line(1, [[0, 2]], 6, [2], [[4, 4, 4]])]                 # 3 clips, clip 2 is the highlight
    ev = lambda sal: eval_qvhighlights([{"qid": 1, "pred_saliency_scores": sal}], gt)
    assert ev([0.0, 0.0, 1.0])["HL-min-Fair"] == {"HL-mAP": 100.0, "HL-Hit1": 100.0}
    assert ev([0.0, 0.0, 1.0, 5.0])["HL-min-Fair"] == {"HL-mAP": 100.0, "HL-Hit1": 0.0}   # arg-max past the end: miss
    assert ev([0.5, 0.1])["HL-min-Fair"] == {"HL-mAP": round(100 / 3, 2), "HL-Hit1": 0.0}  # padded with 0: tie with clip 1
    assert ev([0.5, 0.5, 0.5])["HL-min-Fair"]["HL-mAP"] == round(100 / 3, 2)              # all tied: one threshold
    assert "full" not in ev([0.0, 0.0, 1.0]) and list(ev([1.0])["brief"]) == BRIEF_KEYS[8:]


def test_clear_errors():
    gt = [gt_line(1, [[0, 2]], 6, [2], [[4, 4, 4]])]
    with pytest.raises(ValueError, match="must match"):
        eval_qvhighlights([line(2, [[0, 2, 1]], [1.0])], gt)
    assert eval_qvhighlights([line(1, [[0, 2, 1]], [1.0]), line(2, [[0, 2, 1]], [1.0])], gt, match_number=False)["brief"]["MR-full-mAP"] == 100.0
    with pytest.raises(ValueError, match=r"line 1 \(qid 1\): field 'pred_relevant_windows'"):
        eval_qvhighlights([line(1, [], [1.0])], gt)
    with pytest.raises(ValueError, match="'pred_saliency_scores'"):
        eval_qvhighlights([line(1, [[0, 2, 1]], [float("nan")])], gt)
    with pytest.raises(ValueError, match="which other lines have"):
        eval_qvhighlights([line(1, [[0, 2, 1]], [1.0]), {"qid": 2, "pred_relevant_windows": [[0, 1, 1]]}],
                          gt + [gt_line(2, [[0, 2]], 6, [], [])])
    with pytest.raises(ValueError, match="do not fit"):
        eval_qvhighlights([line(1, [[0, 2, 1]], [1.0])], [gt_line(1, [[0, 2]], 6, [3], [[1, 1, 1]])])


# -- the official files ---------------------------------------------------------------------------------------------

def test_real_files_round_trip_unchanged(tmp_path):
    for f in sorted(FIX.glob("highlight_*.jsonl")) + [shared_path("data", "qvhighlights", "highlight_val_release.jsonl")]:
        assert write_jsonl(_load_jsonl(f, "x"), tmp_path/f.name).read_bytes() == f.read_bytes(), f.name


def test_ground_truth_as_predictions_equals_the_official_script():
    "The whole nested result on the 1 550 val queries equals the official script's output (run with Moment-DETR's code)."
    gt = shared_path("data", "qvhighlights", "highlight_val_release.jsonl")
    pred = qvh_ground_truth_as_predictions(gt)
    validate_qvhighlights_submission(pred, gt)
    official = json.loads((FIX/"official_eval_val_gt_as_predictions.json").read_text())
    r = eval_qvhighlights(pred, gt)
    assert json.dumps(r) == json.dumps(official)             # values and key order
    assert r["brief"]["MR-full-R1@0.7"] == 100.0 and r["brief"]["HL-min-Fair-Hit1"] == 100.0
    # our MR evaluator (ranked by score, stable) agrees with the official MR part
    mr = qvhighlights_mr_eval(__import__("pandas").DataFrame(
        [(g["vid"], i, s, e, 1.0) for i, g in _vid_positions(_load_jsonl(gt, "x")) for s, e in g["relevant_windows"]],
        columns=["video-id", "query", "t-start", "t-end", "score"]), gt)
    assert float(f"{100 * mr['mAP']:.2f}") == r["brief"]["MR-full-mAP"]


def _vid_positions(lines):
    seen = {}
    for g in lines:
        seen[g["vid"]] = seen.get(g["vid"], -1) + 1
        yield seen[g["vid"]], g


def test_validation_and_codalab_zip(tmp_path):
    gt = FIX/"highlight_val_release.jsonl"
    lines = qvh_ground_truth_as_predictions(gt)
    z = write_codalab_submission(tmp_path/"s.zip", lines, lines, gt, gt)
    with zipfile.ZipFile(z) as f:
        assert f.namelist() == list(QVH_CODALAB_FILES.values()) and all("/" not in n for n in f.namelist())
        assert [json.loads(x) for x in f.read("hl_val_submission.jsonl").decode().split("\n")] == lines
    bad = [dict(lines[0], vid="other"), dict(lines[1], pred_saliency_scores=[0.0] * 76),
           dict(lines[2], pred_relevant_windows=[[5, 3, 1.0]])] + lines[2:-1]
    with pytest.raises(ValueError) as e: validate_qvhighlights_submission(bad, gt)
    msg = str(e.value)
    assert "line 1" in msg and "vid 'other'" in msg and "line 2" in msg and "76 'pred_saliency_scores'" in msg
    assert "0 <= start < end" in msg and "appears more than once" in msg and "without a line" in msg


# -- saliency pooling -------------------------------------------------------------------------------------------------

def test_clip_saliency_grids():
    x = torch.arange(12, dtype=torch.float32)[None]
    # QVHighlights grid: step i centred at 2i+1 s, one step per clip
    assert torch.equal(clip_saliency(x[:, :5], fps=1, feat_stride=2, num_frames=2, duration=10), x[:, :5])
    # finer grid (0.5 s steps): max of 4 steps per clip; a 5-s video has 2 whole clips
    assert clip_saliency(x[:, :10], fps=2, feat_stride=1, num_frames=1, duration=5).tolist() == [[3.0, 7.0]]
    # coarse grid (8 s steps): each clip takes the nearest step
    assert clip_saliency(torch.tensor([[1.0, 2.0]]), fps=1, feat_stride=8, num_frames=8, duration=16).tolist() == [[1, 1, 1, 1, 2, 2, 2, 2]]


# -- the whole path on the fixture -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qvh_fixture(tmp_path_factory, one_torch_thread):
    "The fixture's real annotations and generated features/embeddings of the official shapes, in the official layout."
    root = tmp_path_factory.mktemp("qvh")
    (root/"qvhighlights").mkdir()
    for f in FIX.glob("*.jsonl"): shutil.copy(f, root/"qvhighlights"/f.name)
    s = load_settings(overrides={"general.data_root": str(root)})
    for split in ("train", "val", "test"): write_fake_files("qvhighlights", s, split, seed=len(split))
    return root, s


TINY = dict(model=dict(embd_dim=16, fpn_dim=16, head_dim=512, query_fc_dim=32, fpn_layers=1),
            train=dict(epochs=2, warmup_epochs=1, early_stop_epochs=-1, learning_rate=0.001, seed=1),
            data=dict(batch_size=4), test=dict(pre_nms_topk=200, max_seg_num=50))


def test_train_evaluate_submit(qvh_fixture, tmp_path, capsys):
    root, s = qvh_fixture
    t0 = time.time()
    cfg = load_config(ROOT/"configs"/"qvhighlights.yaml", TINY)
    set_deterministic(1)
    tr, va = build_dataset(cfg.data, "train", s), build_dataset(cfg.data, "val", s)
    assert tr[0].feats.shape == (2816, 75) and va.split == "val" and sum(x.mr.num_queries for x in va.samples) == 6
    trainer = Trainer(cfg, tr, tmp_path/"run", va, progress=False)
    metrics = trainer.fit()
    assert list(metrics["official"]) == BRIEF_KEYS and all(0 <= v <= 1 for v in metrics["official"].values()
                                                             if not np.isnan(v))
    sal = trainer.predictions["mr"][0]["saliency"]
    assert sal.shape == (va.samples[0].mr.num_queries, 75) and float(sal.min()) >= 0 and float(sal.max()) <= 1
    # the submission command: val (scored) and test (release file: no ground truth), the codalab zip
    out = tmp_path/"sub"
    assert main(["qvhighlights-submit", "--ckpt", str(tmp_path/"run"/"last.pt"), "--out", str(out),
                 "--set", f"general.data_root={root}"]) == 0
    assert "wrote" in capsys.readouterr().out
    with zipfile.ZipFile(out/"submission.zip") as z: assert z.namelist() == list(QVH_CODALAB_FILES.values())
    val_lines = _load_jsonl(out/"hl_val_submission.jsonl", "x")
    assert "-0.0" not in (out/"hl_val_submission.jsonl").read_text()
    assert [d["qid"] for d in val_lines] == [d["qid"] for d in _load_jsonl(FIX/"highlight_val_release.jsonl", "x")]
    assert all(len(d["pred_saliency_scores"]) == int(d_gt["duration"] / 2) and 1 <= len(d["pred_relevant_windows"]) <= 10
               for d, d_gt in zip(val_lines, _load_jsonl(FIX/"highlight_val_release.jsonl", "x")))
    official = json.loads((out/"val_metrics.json").read_text())
    assert json.dumps(official) == json.dumps(eval_qvhighlights(out/"hl_val_submission.jsonl", FIX/"highlight_val_release.jsonl"))
    # the run's own evaluation and the written file give the same official numbers
    assert all(abs(100 * metrics["official"][k] - official["brief"][k]) < 1e-9 or np.isnan(official["brief"][k]) for k in BRIEF_KEYS)
    assert not (out/"test_metrics.json").exists()
    validate_qvhighlights_submission(_load_jsonl(out/"hl_test_submission.jsonl", "x"), FIX/"highlight_test_release.jsonl")
    # with the released test ground truth, the test split is scored too
    out2 = tmp_path/"sub2"
    assert main(["qvhighlights-submit", "--ckpt", str(tmp_path/"run"/"last.pt"), "--out", str(out2), "--split", "test",
                 "--set", f"general.data_root={root}",
                 "--set", f"qvhighlights.test_annotations={root/'qvhighlights'/'highlight_test_with_gt.jsonl'}"]) == 0
    assert list(json.loads((out2/"test_metrics.json").read_text())["brief"]) == BRIEF_KEYS
    print("\nfixture run (val, official brief):", json.dumps(official["brief"]), f"\n{time.time() - t0:.1f} s")


def test_saliency_labels_and_the_optional_loss(qvh_fixture, tmp_path):
    root, s = qvh_fixture
    cfg = load_config(ROOT/"configs"/"qvhighlights.yaml", {**TINY, "train": {**TINY["train"], "epochs": 1, "saliency_loss_weight": 1.0}})
    tr = build_dataset(cfg.data, "train", s)
    gt = {d["qid"]: d for d in _load_jsonl(FIX/"highlight_train_release.jsonl", "x")}
    for smp in tr.samples:
        r = tr.records[smp.video_id]
        for i, q in enumerate(tr.mr_kept.get(smp.video_id, range(len(r.mr_texts)))):
            want = qvh_clip_labels(gt[r.mr_info[q]["qid"]]).sum(1)     # summed annotators' scores per clip = per step
            got = smp.mr.saliency[i]
            assert torch.equal(got[:len(want)], torch.tensor(want, dtype=torch.float32)) and (got[len(want):] == -1).all()
    assert cfg.train.saliency_loss_weight == 1.0 and load_config(ROOT/"configs"/"qvhighlights.yaml").train.saliency_loss_weight == 0
    set_deterministic(1)
    t = Trainer(cfg, tr, tmp_path/"run", progress=False)
    batch = t._batch([(0, 0, ["mr"]), (1, 1, ["mr"])], 0, 0)
    assert batch.tasks["mr"].saliency.shape == (2, batch.tasks["mr"].num_queries, batch.feats.shape[-1])
    res = t.loss(t.net(batch), batch)
    assert torch.isfinite(res["saliency"]) and res["saliency"] > 0
    off = t.loss.__class__(cfg.train.__class__(**{**cfg.train.__dict__, "saliency_loss_weight": 0.0}), t.model.strides,
                           cfg.model.regression_range, 1)
    assert "saliency" not in off(t.net(batch), batch)
    t.fit(evaluate_at_end=False)


def test_detect_saliency_matches_the_submission(qvh_fixture, tmp_path):
    "Detector.detect(saliency=True) gives the clip saliency the evaluation writes, whole-video and (close) windowed."
    from unimd.detect import Detector, load_detector
    root, s = qvh_fixture
    cfg = load_config(ROOT/"configs"/"qvhighlights.yaml", {**TINY, "train": {**TINY["train"], "epochs": 1}})
    set_deterministic(1)
    tr, va = build_dataset(cfg.data, "train", s), build_dataset(cfg.data, "val", s)
    t = Trainer(cfg, tr, tmp_path/"run", va, progress=False)
    t.fit(evaluate_at_end=False)
    from unimd.more_datasets import qvhighlights_lines
    from unimd.train import evaluate
    _, preds = evaluate(t.ema.module, va, cfg, tasks=("mr",))
    lines = {d["qid"]: d for d in qvhighlights_lines(va, preds["mr"])}
    smp = va[0]
    emb = dict(zip(smp.mr.texts, smp.mr.queries))

    class Stored:                                   # the run's sentence embeddings stand in for a text encoder
        def encode(self, texts): return torch.stack([emb[x] for x in texts])
    det = load_detector(tmp_path/"run"/"last.pt", text_encoder=Stored())
    res, sal = det.detect(smp, queries=smp.mr.texts, classes=[], saliency=True, progress=False)
    r = va.records[smp.video_id]
    for i, q in enumerate(va.mr_kept.get(smp.video_id, range(len(r.mr_texts)))):
        mine = sal[sal["query"] == smp.mr.texts[i]]["saliency"].to_numpy()
        assert np.allclose(mine, lines[r.mr_info[q]["qid"]]["pred_saliency_scores"], atol=1e-6)
    _, win = det.detect(smp, queries=smp.mr.texts, classes=[], saliency=True, window=32, overlap=0.5, progress=False)
    assert win.shape == sal.shape and win["saliency"].between(0, 1).all()
