#!/usr/bin/env python
"""Whole trainings against the official training code, over seeds: is our TAD/MR accuracy the official code's?

    python benchmarks/official_seeds.py train  --official /path/to/UniMD --side official --seeds 0-4 [--out runs/official_seeds]
    python benchmarks/official_seeds.py train  --side ours --seeds 0-4
    python benchmarks/official_seeds.py report [--out runs/official_seeds | --jsonl benchmarks/results/official_seeds.jsonl]

`versus_official.py --rows equality` shows that, fed the same batches from the same weights, the two trainings agree
step by step to float32 rounding. This script runs what that check bypasses: each side's own initialisation, sampler,
random crops and dropout/drop-path streams, for whole synchronized co-trainings, and compares the metrics' mean and
spread over seeds.

* Data: the `charades_ann` surrogate (nbs/45_surrogate: the real Charades and Charades-STA annotations of
  ../shared/data, features generated from the TAD annotations, 384-d MiniLM text zero-padded to the official 512), 400 training and 150
  evaluation videos, loaded once by our pipeline. The official side gets the same tensors through a small Dataset
  that returns its per-video dicts (as its `CharadesDataset.__getitem__` does) and crops them with its own
  `truncate_feats` / `truncate_feats_tad_mr`.
* Official side: its model (`make_meta_arch`), `fix_random_seed`, `FixLenSampler` loaders and `make_data_loader`
  (imported from `train_sync.py` / `libs`), `make_optimizer`, `make_scheduler`, `ModelEma` and
  `cotrain_synchronized_one_epoch` — the loop `train_sync.py` runs.
* Our side: `unimd.train.Trainer` with `train.sampling: sync`.
* Both: the same small model and schedule (below); evaluation of each side's final EMA weights by the same code
  (ours; the official weights are loaded key for key, as `unimd eval --official-ckpt` does).

Each (side, seed) appends one JSON line to <out>/runs.jsonl; runs already there are skipped. 1 torch thread.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from surrogate import COLUMNS, flat_metrics  # noqa: E402
from versus_official import load_official, official_video  # noqa: E402

# the study's scale: charades_ann's sizes and recipe (configs/charades_ann.yaml), with the official text width (512)
VIDEOS = dict(train_videos=400, eval_videos=150, subset_seed=0, seed=0, text_dim=384, preload=True)
TEXT_DIM = 512   # the official heads' fixed CLIP width: the 384-d MiniLM embeddings get zero columns (same on both sides)
MODEL = dict(input_dim=128, embd_dim=64, fpn_dim=64, head_dim=512, query_fc_chanel=64, head_num_layers=2)
RECIPE = dict(max_seq_len=192, batch_size=8, learning_rate=1e-3, warmup_epochs=1, epochs=4, ema_decay=0.99)
METRICS = COLUMNS["charades_ann"]


def official_yaml(folder: Path) -> Path:
    "The official Charades config at the study's scale, written as an official YAML (read by both sides)."
    o = dict(dataset_name="charades", train_split=["Train"], val_split=["Test"], valid_type="charades",
             model_name="LocPointTransformerSyntheses",
             charades=dict(num_classes=157, input_dim=MODEL["input_dim"], feat_stride=4, num_frames=16, trunc_thresh=0.5,
                           crop_ratio=[0.9, 1.0], max_seq_len=RECIPE["max_seq_len"], default_fps="", downsample_rate=1,
                           force_upsampling=False, file_ext="_rgb_flow.npy"),
             dataset=dict(input_dim=MODEL["input_dim"], num_classes=157, max_seq_len=RECIPE["max_seq_len"]),
             model=dict(backbone_type="convnext_stage", embd_kernel_size=3, max_buffer_len_factor=6.0, n_mha_win_size=-1,
                        head_with_ln=True, fpn_type="bifpn_convnext", fpn_layer=3, n_conv_group=8, fpn_kernel_size=7,
                        convnext_depths=[1, 1, 1, 1, 1], task="tad", cls_head_type="dot", cls_head_fn="scale",
                        reg_head_type="one_head_multi", embd_dim=MODEL["embd_dim"], fpn_dim=MODEL["fpn_dim"],
                        head_dim=MODEL["head_dim"], query_fc_chanel=MODEL["query_fc_chanel"],
                        head_num_layers=MODEL["head_num_layers"]),
             opt=dict(learning_rate=RECIPE["learning_rate"], epochs=RECIPE["epochs"], weight_decay=0.05,
                      warmup_epochs=RECIPE["warmup_epochs"], early_stop_epochs=RECIPE["warmup_epochs"] + RECIPE["epochs"]),
             loader=dict(batch_size=RECIPE["batch_size"], num_workers=0),
             train_cfg=dict(init_loss_norm=100, clip_grad_l2norm=1.0, cls_prior_prob=0.01, center_sample="radius",
                            center_sample_radius=1.5, loss_weight=1.0, tad_loss_weight=3.0, mr_loss_weight=1.0),
             test_cfg=dict(voting_thresh=0.7, pre_nms_topk=2000, max_seg_num=200, min_score=0.001, multiclass_nms=True),
             output_folder="./ckpt/", devices=["cpu"])
    p = folder/"charades_seedstudy.yaml"   # the first word names the dataset section, as the official scripts read it
    p.write_text(yaml.safe_dump(o, sort_keys=False))
    return p


def our_config(official: Path):
    from unimd.official import translate_official_config
    cfg, _ = translate_official_config(official)
    cfg = cfg.copy(data=dict(dataset="charades_ann", train_split="train", val_split="test"),
                   train=dict(ema_decay=RECIPE["ema_decay"], tasks=["tad", "mr"], sampling="sync",
                              checkpoint_every=RECIPE["warmup_epochs"] + RECIPE["epochs"], eval_every=0))
    cfg.data.options = dict(VIDEOS)   # replaced, not merged: the official dataset's options mean nothing here
    return cfg


def datasets(cfg):
    "Training and evaluation sets, their text embeddings zero-padded to the official width."
    from unimd.data import build_dataset
    out = []
    for split in (cfg.data.train_split, cfg.data.val_split):
        ds = build_dataset(cfg.data, split)
        for s in ds.samples:
            for a in (s.tad, s.mr):
                if a is not None: a.queries = torch.nn.functional.pad(a.queries, (0, TEXT_DIM - a.queries.shape[1]))
        out.append(ds)
    return out


# -- the official side ---------------------------------------------------------------------------------------------
def official_dict(s, task):
    "One task of one video as the official dataset returns it before cropping (segments None when it has none)."
    d = official_video(s, task)
    if not len(d["segments"]): d["segments"], d["labels"] = None, None
    return d


class OfficialView(torch.utils.data.Dataset):
    """Our loaded samples in the official `CharadesDataset`'s fetch modes: 'tad' / 'mr' (videos of that task only,
    fetch mode "diff") and 'both' (videos of both tasks); cropped by the official functions, as its `__getitem__`."""
    def __init__(self, samples, mode, du, max_seq_len, trunc_thresh=0.5, crop_ratio=(0.9, 1.0)):
        has = lambda s, t: s.task(t) is not None
        pick = {"tad": lambda s: has(s, "tad") and not has(s, "mr"), "mr": lambda s: has(s, "mr") and not has(s, "tad"),
                "both": lambda s: has(s, "tad") and has(s, "mr")}[mode]
        self.samples, self.mode, self.du = [s for s in samples if pick(s)], mode, du
        self.L, self.th, self.cr = max_seq_len, trunc_thresh, list(crop_ratio)

    def __len__(self): return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        off = 0.5 * s.num_frames / s.feat_stride
        tad = official_dict(s, "tad") if self.mode in ("tad", "both") else None
        mr = official_dict(s, "mr") if self.mode in ("mr", "both") else None
        cut = lambda d: self.du.truncate_feats(d, self.L, self.th, off, self.cr)
        if self.mode == "tad" and tad["segments"] is not None: tad = cut(tad)
        elif self.mode == "mr" and mr["segments"] is not None: mr = cut(mr)
        elif self.mode == "both":
            if tad["segments"] is None and mr["segments"] is not None:
                mr = cut(mr); tad["feats"] = mr["feats"]
            elif tad["segments"] is not None and mr["segments"] is None:
                tad = cut(tad); mr["feats"] = tad["feats"]
            elif tad["segments"] is not None:
                tad, mr = self.du.truncate_feats_tad_mr(tad, mr, self.L, self.th, off, self.cr)
        return {"tad": tad, "mr": mr}


def import_official_training(off):
    "The official training loop's pieces; `train_sync.py` imports tensorboard, which training never needs here."
    if "torch.utils.tensorboard" not in sys.modules:
        try: import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            stub = types.ModuleType("torch.utils.tensorboard"); stub.SummaryWriter = object
            sys.modules["torch.utils.tensorboard"] = stub
    with contextlib.redirect_stdout(io.StringIO()):
        import train_sync
        from libs.datasets import data_utils
        from libs.datasets import make_data_loader
        from libs.utils import cotrain_synchronized_one_epoch, fix_random_seed
    from torch.utils.data import Sampler
    if Sampler.__init__ is object.__init__:
        # newer torch dropped Sampler's `data_source` argument, which the official FixLenSampler still passes
        Sampler.__init__ = lambda self, data_source=None: None
    return types.SimpleNamespace(train_sync=train_sync, du=data_utils, make_data_loader=make_data_loader,
                                 one_epoch=cotrain_synchronized_one_epoch, fix_random_seed=fix_random_seed)


def train_official(off, oyaml: Path, train_ds, seed: int) -> dict:
    "train_sync.py's loop on `train_ds`; returns the final EMA state dict (official keys)."
    ot = import_official_training(off)
    ocfg = off.load_config(str(oyaml))
    gen = ot.fix_random_seed(seed, include_cuda=False)
    L, bs = ocfg["dataset"]["max_seq_len"], ocfg["loader"]["batch_size"]
    views = {m: OfficialView(train_ds.samples, m, ot.du, L) for m in ("tad", "mr", "both")}
    n = min(len(views["tad"]), len(views["mr"]))
    tad_l = ot.train_sync.make_dataloader_with_fix_len(views["tad"], True, gen, bs, 0, fix_size=n)
    mr_l = ot.train_sync.make_dataloader_with_fix_len(views["mr"], True, gen, bs, 0, fix_size=n)
    both_l = ot.make_data_loader(views["both"], True, gen, bs, 0)
    with contextlib.redirect_stdout(io.StringIO()):
        model = off.make_meta_arch(ocfg["model_name"], **ocfg["model"])
    opt = off.make_optimizer(model, ocfg["opt"])
    sched = off.make_scheduler(opt, ocfg["opt"], len(tad_l) + len(both_l))
    ema = off.ModelEma(model, decay=RECIPE["ema_decay"])
    epochs = ocfg["opt"].get("early_stop_epochs", ocfg["opt"]["epochs"] + ocfg["opt"]["warmup_epochs"])
    tc = ocfg["train_cfg"]
    for epoch in range(epochs):
        with contextlib.redirect_stdout(io.StringIO()):
            ot.one_epoch([tad_l, mr_l, both_l], model, opt, sched, epoch, epochs, model_ema=ema,
                         clip_grad_l2norm=tc["clip_grad_l2norm"], print_freq=10 ** 9,
                         tad_loss_weight=tc["tad_loss_weight"], mr_loss_weight=tc["mr_loss_weight"])
    return dict(state=ema.module.state_dict(), iters_per_epoch=len(tad_l) + len(both_l), epochs=epochs,
                videos=dict((m, len(v)) for m, v in views.items()))


# -- both sides ----------------------------------------------------------------------------------------------------
def run_one(off, side: str, seed: int, data, out: Path) -> dict:
    from unimd.model import UniMD
    from unimd.official import load_official_weights
    from unimd.train import Trainer, evaluate
    oyaml, cfg, train_ds, val_ds = data
    cfg = cfg.copy(train=dict(seed=seed))
    t0, c0 = time.time(), time.process_time()
    if side == "ours":
        tr = Trainer(cfg, train_ds, out/"ckpt"/f"ours-s{seed}", progress=False)
        tr.fit(evaluate_at_end=False)
        model, extra = tr.ema.module, dict(iters_per_epoch=tr.iters_per_epoch, epochs=tr.epochs)
    else:
        res = train_official(off, oyaml, train_ds, seed)
        model = UniMD(cfg.model)
        load_official_weights(model, {"state_dict_ema": {f"module.{k}": v for k, v in res.pop("state").items()}})
        extra = res
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    metrics, _ = evaluate(model, val_ds, cfg)
    return dict(side=side, seed=seed, videos_cfg=dict(VIDEOS), recipe=dict(RECIPE), train_wall_s=round(train_s, 1),
                train_cpu_s=round(train_cpu, 1), metrics=metrics, **extra)


def seeds_of(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def cmd_train(args):
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out/"runs.jsonl"
    done = {(r["side"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())} if log.exists() else set()
    with tempfile.TemporaryDirectory() as tmp:
        oyaml = official_yaml(Path(tmp))
        cfg = our_config(oyaml)
        data = (oyaml, cfg, *datasets(cfg))   # built once for every seed, before the official code's paths join sys.path
        off = load_official(args.official) if args.side == "official" else None
        for seed in seeds_of(args.seeds):
            if (args.side, seed) in done: continue
            rec = run_one(off, args.side, seed, data, args.out)
            rec["metrics"] = flat_metrics(rec["metrics"])
            with log.open("a") as f: f.write(json.dumps(rec) + "\n")
            print(json.dumps({k: rec[k] for k in ("side", "seed", "train_cpu_s")} | {n: rec["metrics"].get(k) for n, k in METRICS.items()}),
                  flush=True)


def welch(a, b):
    "Welch's t statistic and its degrees of freedom (two samples, unequal variances)."
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.mean(a) - statistics.mean(b)) / ((va + vb) ** 0.5 or float("inf"))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb else float("inf")
    return t, df


def cmd_report(args):
    runs = [json.loads(l) for l in (args.jsonl or args.out/"runs.jsonl").read_text().splitlines()]
    side = {s: [r for r in runs if r["side"] == s] for s in ("official", "ours")}
    print(f"seeds: official {sorted(r['seed'] for r in side['official'])}, ours {sorted(r['seed'] for r in side['ours'])}\n")
    print("| metric (%) | official | ours | ours − official | Welch t (df) |\n|---|---|---|---|---|")
    for name, key in METRICS.items():
        a = [100 * r["metrics"][key] for r in side["ours"] if key in r["metrics"]]
        b = [100 * r["metrics"][key] for r in side["official"] if key in r["metrics"]]
        if len(a) < 2 or len(b) < 2: continue
        t, df = welch(a, b)
        ms = lambda x: f"{statistics.mean(x):.2f} ± {statistics.stdev(x):.2f}"
        print(f"| {name} | {ms(b)} | {ms(a)} | {statistics.mean(a) - statistics.mean(b):+.2f} | {t:+.2f} ({df:.1f}) |")
    for s, rs in side.items():
        if rs: print(f"\n{s}: training CPU {min(r['train_cpu_s'] for r in rs):.0f}–{max(r['train_cpu_s'] for r in rs):.0f} s per seed")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--official", type=Path, help="checkout of the official UniMD repository (needed for --side official)")
    t.add_argument("--side", choices=["official", "ours"], required=True)
    t.add_argument("--seeds", default="0-4", help="a seed or a range, e.g. 0-4")
    t.add_argument("--videos", default="400/150", help="training/evaluation videos (smaller: a quick check of the harness)")
    t.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="cosine epochs after the warm-up epoch")
    r = sub.add_parser("report")
    r.add_argument("--jsonl", type=Path, help="a results file instead of <out>/runs.jsonl (e.g. benchmarks/results/official_seeds.jsonl)")
    for p in (t, r):
        p.add_argument("--out", type=Path, default=ROOT/"runs"/"official_seeds")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        tr, _, ev = args.videos.partition("/")
        VIDEOS.update(train_videos=int(tr), eval_videos=int(ev)); RECIPE.update(epochs=args.epochs)
        if args.side == "official" and not args.official: ap.error("--side official needs --official PATH")
        cmd_train(args)
    else:
        cmd_report(args)


if __name__ == "__main__":
    main()
