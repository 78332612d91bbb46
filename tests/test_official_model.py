"""The official UniMD model's golden fixture (../shared/fixtures/official_model, the official evaluator's recorded outputs (see the Fidelity page)) through our code.

The fixture (several MB) is read from ../shared and not committed; every test here skips when it is absent.
Loaded through the official checkpoint path (a .pth.tar-like dict with `module.`-prefixed `state_dict_ema`), our model
reproduces the official per-level logits and offsets to 1e-5, the official detections, the label assignment
exactly and the training losses (and the loss normaliser) to 1e-5 relative."""
import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from unimd.backbone import DropPath
from unimd.config import official_preset
from unimd.data import TaskAnnotation, VideoSample, collate
from unimd.decode import candidates, decode_task
from unimd.losses import UniMDLoss
from unimd.model import TaskOutput, UniMD
from unimd.official import load_official_weights, read_official_checkpoint, translate_official_config
from unimd.train import param_groups

CASES = [("charades_tiny", "charades_i3d", 64), ("ego4d_tiny", "ego4d", 128)]


@pytest.fixture(scope="module")
def fx():
    root = shared_path("fixtures", "official_model")
    sd = {k: torch.from_numpy(v) for k, v in np.load(root/"state_dict.npz").items()}
    return root, sd, json.loads((root/"manifest.json").read_text())


def official_ckpt(sd, tmp_path):
    "Write the fixture state dict as an official .pth.tar (layout of checkpoint_layout.json) and return its path."
    p = tmp_path/"official.pth.tar"
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"epoch": 20, "state_dict": prefixed, "scheduler": {}, "optimizer": {}, "best_map": 0.0,
                "state_dict_ema": prefixed}, p)
    return p


def model_for(root, name, msl, ckpt):
    cfg, _ = translate_official_config(root/name/f"{name}_fixture.yaml")
    assert cfg.data.max_seq_len == msl and cfg.model.input_dim == 64 and cfg.model.embd_dim == 16
    return load_official_weights(UniMD(cfg.model), ckpt).eval(), cfg


def samples(root, name, manifest, tad=True, mr=True, gt=True):
    inp = np.load(root/name/"inputs.npz")
    tq = torch.from_numpy(inp["tad_class_embeddings"])
    out = []
    for meta in manifest["configs"][name]["videos"]:
        v = meta["video_id"]
        ann = lambda task, q: TaskAnnotation(torch.from_numpy(inp[f"{v}__{task}_gt_segments_grid"]) if gt else torch.zeros(0, 2),
                                             torch.from_numpy(inp[f"{v}__{task}_gt_labels"]) if gt else torch.zeros(0, dtype=torch.long), q)
        out.append(VideoSample(v, torch.from_numpy(inp[f"{v}__feats"]), meta["fps"], meta["duration"], meta["feat_stride"],
                               meta["feat_num_frames"], tad=ann("tad", tq) if tad else None,
                               mr=ann("mr", torch.from_numpy(inp[f"{v}__mr_query_embeddings"])) if mr else None))
    return out


def eval_videos(root, name, man, msl):
    "Each evaluation video of a fixture config: (its recorded outputs, its single-video batch)."
    for s, ef in zip(samples(root, name, man, gt=False), man["configs"][name]["eval_files"]):
        b = collate([s], msl, training=False)
        assert b.feats.shape[-1] == ef["padded_T"]
        yield np.load(root/name/ef["file"]), b


def test_checkpoint_layout_and_config_translation(fx):
    root, sd, _ = fx
    layout = json.loads((root/"checkpoint_layout.json").read_text())
    assert {k[len("module."):] for k, _, _ in layout["state_dict"]} == set(sd)
    for name, preset, msl in CASES:
        cfg, notes = translate_official_config(root/name/f"{name}_fixture.yaml")
        merged = json.loads((root/name/"config_merged.json").read_text())["model"]["test_cfg"]
        for k in ("pre_nms_topk", "max_seg_num", "min_score", "nms_sigma", "multiclass_nms", "iou_threshold",
                  "duration_thresh", "pre_nms_thresh", "nms_method"):
            assert getattr(cfg.test, k) == merged[k], (name, k)
        assert cfg.train.official_tie_rule and cfg.train.shared_normalizer and cfg.model.kernel_relu
        assert cfg.model.cls_prior_prob == 0 and any("never read" in n for n in notes)
    # the official optimiser groups: 135 tensors with weight decay, 326 without
    g = param_groups(UniMD(cfg.model), 0.05)
    assert (len(g[0]["params"]), len(g[1]["params"])) == (135, 326)


@pytest.mark.parametrize("name,preset,msl", CASES)
def test_per_level_outputs_match_to_1e5(fx, tmp_path, name, preset, msl):
    root, sd, man = fx
    model, cfg = model_for(root, name, msl, official_ckpt(sd, tmp_path))
    for ev, b in eval_videos(root, name, man, msl):
        with torch.no_grad():
            feats, masks = model.backbone(b.feats, b.masks)
            neck, _ = model.neck(feats, masks)
            outs = model(b)
        for l in range(6):
            assert (masks[l][0].numpy() == ev[f"mask_L{l}"]).all()
            assert np.abs(feats[l][0].numpy() - ev[f"backbone_feat_L{l}"]).max() < 1e-5
            assert np.abs(neck[l][0].numpy() - ev[f"neck_feat_L{l}"]).max() < 1e-5
            for t in ("tad", "mr"):
                assert np.abs(outs[t].cls_logits[l][0].numpy() - ev[f"{t}_cls_logits_L{l}"]).max() < 1e-5, (t, l)
                assert np.abs(outs[t].offsets[l][0].numpy() - ev[f"{t}_offsets_L{l}"]).max() < 1e-5, (t, l)
        for t in ("tad", "mr"):
            segs, scores, labels, _ = candidates(outs[t], b.tasks[t], model.strides, cfg.test)
            assert len(scores) == len(ev[f"{t}_prenms_scores"])
            assert np.abs(np.sort(scores.numpy()) - np.sort(ev[f"{t}_prenms_scores"])).max() < 2e-6   # sigmoid of logits equal to 1e-5


def _near_tie_equal(seg, sc, lab, eseg, esc, elab, tol=2e-6):
    "Same detections up to the order of scores within `tol` (the model outputs agree to ~1e-6, not bit for bit)."
    assert len(sc) == len(esc) and np.abs(sc - esc).max() < tol          # both sorted by descending score
    unmatched = 0
    for c in np.union1d(lab, elab):
        a, b = seg[lab == c], eseg[elab == c]
        free = np.ones(len(b), bool)
        for x in a:   # match each of our segments to a free official one within 1e-3 s
            d = np.abs(b - x).max(1) if len(b) else np.zeros(0)
            j = np.flatnonzero(free & (d < 1e-3))
            if len(j): free[j[0]] = False
            else: unmatched += 1
        unmatched += int(free.sum())
    # a near-tie at the max_seg_num cut may swap a member in or out; nothing else may differ
    assert unmatched <= 4, unmatched


@pytest.mark.parametrize("name,preset,msl", CASES)
def test_detections(fx, tmp_path, name, preset, msl):
    root, sd, man = fx
    model, cfg = model_for(root, name, msl, official_ckpt(sd, tmp_path))
    for ev, b in eval_videos(root, name, man, msl):
        with torch.no_grad(): outs = model(b)
        for t in ("tad", "mr"):
            exp = [ev[f"{t}_final_{k}"] for k in ("segments_sec", "scores", "labels")]
            # 1) from the official per-level outputs our decoding is exact: segments and labels bit-identical,
            #    scores within one float32 ulp (expf rounding)
            off = TaskOutput([torch.from_numpy(ev[f"{t}_cls_logits_L{l}"])[None] for l in range(6)],
                             [torch.from_numpy(ev[f"{t}_offsets_L{l}"])[None] for l in range(6)],
                             [torch.from_numpy(ev[f"mask_L{l}"])[None] for l in range(6)], torch.tensor([0]))
            r = decode_task(off, b.tasks[t], b.meta, model.strides, cfg.test)[0]
            assert (r["segments"].numpy() == exp[0]).all() and (r["labels"].numpy() == exp[2]).all()
            assert np.abs(r["scores"].numpy() - exp[1]).max() <= 6e-8
            # 2) end to end from the features: the same detections up to near-tie order
            r = decode_task(outs[t], b.tasks[t], b.meta, model.strides, cfg.test)[0]
            _near_tie_equal(r["segments"].numpy(), r["scores"].numpy(), r["labels"].numpy(), *exp)


@pytest.mark.parametrize("name,preset,msl", CASES)
def test_label_assignment_is_exact(fx, tmp_path, name, preset, msl):
    root, sd, man = fx
    model, cfg = model_for(root, name, msl, official_ckpt(sd, tmp_path))
    lt = np.load(root/name/"label_targets_joint_both_tasks.npz")
    batch = collate(samples(root, name, man)[:2], msl, training=True)
    with torch.no_grad(): outs = model(batch)
    crit = UniMDLoss(cfg.train, model.strides, cfg.model.regression_range, num_classes=110 if "ego" in name else 157)
    for t in ("tad", "mr"):
        cls, reg = crit.targets(outs[t], batch.tasks[t])
        for i in range(2):
            q = lt[f"{t}_b{i}_gt_cls_targets"].shape[1]
            assert (cls[i, :, :q].numpy() == lt[f"{t}_b{i}_gt_cls_targets"]).all()
            e, g = lt[f"{t}_b{i}_gt_reg_targets"], reg[i, :, :q].numpy()
            assert (np.isfinite(e) == np.isfinite(g)).all() and np.abs(e[np.isfinite(e)] - g[np.isfinite(g)]).max() < 1e-6


@pytest.mark.parametrize("mode", ["L1_submodules_eval", "L2_batchnorm_train"])
@pytest.mark.parametrize("name,preset,msl", CASES)
def test_training_losses_match(fx, tmp_path, name, preset, msl, mode):
    root, sd, man = fx
    ckpt = official_ckpt(sd, tmp_path)
    exp_all = json.loads((root/name/"losses.json").read_text())["cases"]
    specs = {"tad_only": [(1, 0), (1, 0)], "mr_only": [(0, 1), (0, 1)], "joint_both_tasks": [(1, 1), (1, 1)],
             "mixed_v0tad_v1mr": [(1, 0), (0, 1)]}
    full = samples(root, name, man)
    for case, spec in specs.items():
        model, cfg = model_for(root, name, msl, ckpt)
        if mode.startswith("L1"): model.eval()
        else:
            model.train()
            for m in model.modules():
                if isinstance(m, (torch.nn.Dropout, DropPath)): m.eval()
        crit = UniMDLoss(cfg.train, model.strides, cfg.model.regression_range, num_classes=110 if "ego" in name else 157)
        vids = [VideoSample(**{**full[i].__dict__, "tad": full[i].tad if tad else None, "mr": full[i].mr if mr else None})
                for i, (tad, mr) in enumerate(spec)]
        batch = collate(vids, msl, training=True)
        res = crit(model(batch), batch)
        exp = exp_all[f"{mode}/{case}"]
        assert abs(crit.normalizer.value - exp["loss_normalizer_after"]) < 1e-9
        for t in ("tad", "mr"):
            assert (exp[t] is None) == (t not in res), (case, t)
            if exp[t] is None: continue
            for k in ("cls_loss", "reg_loss", "final_loss"):
                assert getattr(res[t], k).item() == pytest.approx(exp[t][k], rel=1e-5), (case, t, k)
        assert res["total"].item() == pytest.approx(exp["total_weighted"], rel=1e-5)
        grads = exp.get("grad_l2_norm_per_parameter_of_total_weighted")
        if grads:
            res["total"].backward()
            named = dict(model.named_parameters())
            for k, v in grads.items():
                assert named[k].grad.norm().item() == pytest.approx(v, rel=1e-4, abs=1e-7), k


def test_cli_eval_official_checkpoint(fx, tmp_path, capsys):
    """`unimd eval --official-ckpt` end to end on Ego4D-layout files: the official YAML's dataset becomes our Ego4D
    loader, the weights are the checkpoint's EMA weights, and the metrics equal evaluating the loaded model directly."""
    from unimd.cli import main
    from unimd.data import build_dataset
    from unimd.datasets import write_fake_files
    from unimd.official import load_official
    from unimd.paper_datasets import read_ego4d_mq, read_ego4d_nlq
    from unimd.settings import load_settings
    from unimd.train import evaluate
    root, sd, _ = fx
    ckpt, yml = official_ckpt(sd, tmp_path), root/"ego4d_tiny"/"ego4d_tiny_fixture.yaml"
    sets = {"general.data_root": tmp_path/"data", "general.device": "cpu",
            "ego4d.mq_annotations": shared_path("data", "ego4d", "mq_clip_annotations_not_filter.json"),
            "ego4d.nlq_annotations": shared_path("data", "ego4d", "nlq_clip_annotations_not_filter.json"),
            "ego4d.nlq_val_official": shared_path("data", "ego4d", "nlq_nlq_val.json")}
    s = load_settings(overrides={k: str(v) for k, v in sets.items()})
    mq, _ = read_ego4d_mq(s.path_of("ego4d", "mq_annotations"), "validation")
    nlq = read_ego4d_nlq(s.path_of("ego4d", "nlq_annotations"), "validation")
    both = sorted({r.video_id for r in mq} & {r.video_id for r in nlq})[:3]
    write_fake_files("ego4d", s, "validation", dict(feature_dims=[64]), video_ids=both)
    out = tmp_path/"eval.json"
    argv = ["eval", "--official-ckpt", str(ckpt), "--config", str(yml), "--out", str(out),
            "-o", "data.options={feature_dims: [64], allow_missing: true}", "-o", "test.max_seg_num=100"]
    for k, v in sets.items(): argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "note: ignored (never read by the official architecture)" in printed and f"wrote {out}" in printed
    got = json.loads(out.read_text())

    model, cfg, _ = load_official(ckpt, yml)
    cfg = cfg.copy(data=dict(options=dict(feature_dims=[64], allow_missing=True)), test=dict(max_seg_num=100))
    ds = build_dataset(cfg.data, "validation", s)
    assert len(ds) == 3 and cfg.data.dataset == "ego4d"
    want, _ = evaluate(model, ds, cfg, device="cpu", tasks=("tad", "mr"))
    assert set(got) == set(want) == {"tad", "mr"} and "mAP" in got["tad"] and "R@1,IoU=0.5" in got["mr"]
    assert all(got[t][k] == pytest.approx(float(v), abs=1e-9) for t in want for k, v in want[t].items() if np.isscalar(v))

    # --tasks tad reads no MR annotations or embeddings at all
    tad_only = {**sets, "ego4d.nlq_annotations": tmp_path/"none.json", "ego4d.nlq_val_official": tmp_path/"none.json"}
    assert main(argv[:argv.index("--set")] + ["--tasks", "tad"] + [a for k, v in tad_only.items() for a in ("--set", f"{k}={v}")]) == 0
    assert set(json.loads(out.read_text())) == {"tad"}
