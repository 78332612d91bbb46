#!/usr/bin/env python
"""unimd against the official UniMD code, side by side in one process: same inputs, same weights, outputs checked.

    python benchmarks/versus_official.py --official /path/to/UniMD [--repeats 5] [--rows nms,heads,train,infer,memory]
    python benchmarks/versus_official.py            # our side only (no official checkout)

`--official` is a checkout of https://github.com/yingsen1/UniMD (commit 9114067) with only the CPU fixes of
shared/TOOLING.md; its compiled `nms_1d_cpu` is imported from `libs/utils` or, when absent and a C++ compiler is
present, built on the fly with `torch.utils.cpp_extension`. Nothing of it is copied here: it is imported from PATH.
Python modules the official code imports but never uses on these paths (ipdb, prettytable, h5py, terminaltables) are
replaced by empty stand-ins when missing, and a CUDA-only torchvision is worked around as in `unimd.compat`.

Rows (ratio = official time / ours; > 1: we are faster):
* Soft-NMS, Ego4D-MQ-like (500 videos x 110 classes) and Charades-STA-like (3,720 queries over 1,334 videos):
  official = its `batched_nms` per video (a Python loop over classes calling the compiled op) over the whole set;
  ours "evaluation" = what `unimd.train.evaluate` runs (all videos in one call), ours "per video" = `batched_nms`
  per video. Outputs: same (label, segment) sets per video, scores within 1e-6 relative (glibc `expf` is not
  correctly rounded; ours is, so scores can differ in the last unit).
* Heads forward (trunks + query-dependent parts): TAD 157 classes, batch 2, T=288; MR 40 + 56 queries.
* One training iteration (forward, loss, backward, AdamW, EMA) at the official Ego4D (T=1024, batch 2, 110 classes,
  both tasks) and Charades (T=288, batch 2, 157 classes) configs; drop-path and dropout are off on both sides so
  that the first iteration's losses can be compared.
* Inference per video (T=1024, both tasks, model + decoding + Soft-NMS).
* Peak RSS of 3 training iterations (Ego4D config), each side in its own subprocess.

Timings are interleaved (official, ours, official, ours, ...) and repeated; the table shows medians, the range
(min-max) and the ratio of medians. Run with 1 torch thread (default) and report the load average it prints.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT_SHARED = HERE.parent.parent/"shared"
sys.path.insert(0, str(HERE))
from softnms import charades_like, ego4d_like  # noqa: E402  (the Soft-NMS workloads, shared with softnms.py)

from unimd import nms as N  # noqa: E402
from unimd.compat import import_open_clip  # noqa: E402
from unimd.data import TaskAnnotation, VideoSample, collate  # noqa: E402
from unimd.decode import nms_per_video, predict  # noqa: E402
from unimd.losses import UniMDLoss  # noqa: E402
from unimd.model import UniMD  # noqa: E402
from unimd.official import official_key_map, to_official_state_dict, translate_official_config  # noqa: E402
from unimd.train import EMA, param_groups  # noqa: E402

EGO4D_YAML = "configs/ego4d/ego4d_vmaeVerb_convnext_35e_stop15e.yaml"
CHARADES_YAML = "configs/charades/charades_i3d_convnext_bs2_70e_stop20e.yaml"
UNUSED_MODULES = ("ipdb", "prettytable", "h5py", "terminaltables")
# device_check.py --dry-run: our side only, a model small enough for CI
TINY_MODEL = dict(data=dict(max_seq_len=64, batch_size=2),
                  model=dict(input_dim=32, embd_dim=16, fpn_dim=16, head_dim=32, text_dim=32, query_fc_dim=32, fpn_layers=1))


# -- the official code -------------------------------------------------------------------------------------------
def load_official(path: Path):
    "Import the official modules from a checkout; returns a namespace with what the benchmark calls."
    path = Path(path).resolve()
    if not (path/"libs"/"modeling"/"meta_archs.py").exists():
        raise SystemExit(f"--official {path}: not a UniMD checkout (libs/modeling/meta_archs.py missing)")
    sys.path[:0] = [str(path), str(path/"libs"/"utils")]
    try:
        import nms_1d_cpu  # noqa: F401
        built = "prebuilt"
    except ImportError:
        from torch.utils.cpp_extension import load
        cache = Path(tempfile.gettempdir())/"unimd_official_nms_build"
        cache.mkdir(exist_ok=True)
        sys.modules["nms_1d_cpu"] = load("nms_1d_cpu", [str(path/"libs"/"utils"/"csrc"/"nms_cpu.cpp")],
                                         build_directory=str(cache), extra_cflags=["-O3"], verbose=False)
        built = f"built on the fly in {cache}"
    import_open_clip()  # CUDA-only torchvision on a CPU torch: the same workaround as unimd.compat (timm imports it)
    for name in UNUSED_MODULES:
        try: __import__(name)
        except ImportError:
            stub = types.ModuleType(name); stub.PrettyTable = object
            sys.modules[name] = stub
    with contextlib.redirect_stdout(io.StringIO()):
        from libs.core import load_config
        from libs.modeling import make_meta_arch
        from libs.utils import ModelEma, make_optimizer, make_scheduler
        from libs.utils.nms import batched_nms
    return types.SimpleNamespace(path=path, nms_build=built, load_config=load_config, make_meta_arch=make_meta_arch,
                                 ModelEma=ModelEma, make_optimizer=make_optimizer, make_scheduler=make_scheduler,
                                 batched_nms=batched_nms)


def no_dropout(model):
    "Dropout and drop-path off (both sides), so that a training iteration is deterministic and comparable."
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout): m.p = 0.0
        if hasattr(m, "drop_prob"): m.drop_prob = 0.0
        if type(m).__name__ == "DropPath" and hasattr(m, "p"): m.p = 0.0
    return model


def models(off, yaml, seed=0, device="cpu", model_override=None):
    """(our model, our config, official model or None, official config or None) with the same weights.
    `model_override`: config sections to change (our side only, no official model then)."""
    if model_override: off = None
    root = off.path if off else None
    cfg, _ = translate_official_config((root or HERE)/yaml) if root else (None, None)
    if cfg is None: cfg = _our_config(yaml)
    if model_override: cfg = cfg.copy(**model_override)
    torch.manual_seed(seed)
    ours = no_dropout(UniMD(cfg.model)).to(device)
    theirs, ocfg = None, None
    if off:
        ocfg = off.load_config(str(root/yaml))
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = off.make_meta_arch(ocfg["model_name"], **ocfg["model"])
        sd = {k.removeprefix("module."): v for k, v in to_official_state_dict(ours).items()}
        theirs.load_state_dict(sd, strict=True)
        no_dropout(theirs).to(device)
    return ours, cfg, theirs, ocfg


def _our_config(yaml):
    "Without a checkout: our preset of the same official config."
    from unimd.config import official_preset
    return official_preset("ego4d" if "ego4d" in yaml else "charades_i3d")


# -- timing ------------------------------------------------------------------------------------------------------
PROFILE = {"on": False, "top": 10}


def profile_each(fns: dict, label: str):
    "torch.profiler's top entries (self CPU time) of one run of each side."
    from torch.profiler import ProfilerActivity, profile
    for k, f in fns.items():
        with profile(activities=[ProfilerActivity.CPU]) as p: f()
        print(f"\n--- profile: {label} | {k} ---")
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=PROFILE["top"], max_name_column_width=40))


def interleaved(fns: dict, repeats: int, warmup: int = 1, label: str = ""):
    "Run every fn once (warm-up), then `repeats` rounds of each in turn; returns {name: [seconds]} and last outputs."
    outs = {k: f() for k, f in fns.items() for _ in range(warmup)}
    if PROFILE["on"]: profile_each(fns, label)
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter(); outs[k] = f(); ts[k].append(time.perf_counter() - t)
    return ts, outs


def fmt(ts):
    if not ts: return "-"
    med = statistics.median(ts)
    unit, s = ("s", 1.0) if med >= 1 else ("ms", 1e3)
    return f"{med * s:.3g} {unit} ({min(ts) * s:.3g}-{max(ts) * s:.3g})"


# -- Soft-NMS ----------------------------------------------------------------------------------------------------
def nms_workloads(scale):
    segs, scores, group = ego4d_like(n_videos=max(1, round(500 * scale)))
    ego = dict(name="Ego4D-MQ-like", segs=segs, scores=scores, labels=group % 110, video=group // 110,
               cfg=dict(iou_threshold=0.1, min_score=0.001, sigma=0.9, max_seg_num=2000))
    Q = max(3, round(3720 * scale))
    segs, scores, q = charades_like(n_queries=Q)
    V = max(1, round(1334 * scale))                               # 3,720 queries over 1,334 videos
    vid_q = torch.arange(Q) * V // Q
    label_q = torch.arange(Q) - torch.searchsorted(vid_q, vid_q)
    video, qi = vid_q[q], label_q[q]
    cha = dict(name="Charades-STA-like", segs=segs, scores=scores, labels=qi, video=video,
               cfg=dict(iou_threshold=0.1, min_score=0.001, sigma=0.5, max_seg_num=200))
    for w in (ego, cha):
        # each side's input as its evaluation has it, prepared outside the timing: the official code's evaluation
        # loop holds one video's candidates at a time (`parts`), ours a batch's candidates with their row (`rows`)
        w["parts"] = split_by_video(w)
        w["ids"] = torch.tensor([v for v, _ in w["parts"]])
        w["rows"] = torch.searchsorted(w["ids"], w["video"])
    return [ego, cha]


def split_by_video(w):
    v = w["video"]
    order = torch.argsort(v, stable=True)
    ids, counts = torch.unique_consecutive(v[order], return_counts=True)
    return [(int(i), idx) for i, idx in zip(ids, torch.split(order, counts.tolist()))]


def ours_eval_nms(w):
    "What our evaluation runs for these candidates: `unimd.decode.nms_per_video`, every video in one Soft-NMS call."
    c = w["cfg"]
    test = types.SimpleNamespace(nms_method="soft", multiclass_nms=True, iou_threshold=c["iou_threshold"],
                                 nms_sigma=c["sigma"], min_score=c["min_score"], max_seg_num=c["max_seg_num"],
                                 voting_thresh=0.75, nms_backend="auto")
    out = nms_per_video(w["segs"], w["scores"], w["labels"], w["rows"], len(w["ids"]), test)
    return {int(v): o for v, o in zip(w["ids"], out)}


def ours_per_video_nms(w):
    c, out = w["cfg"], {}
    for vid, idx in w["parts"]:
        out[vid] = N.batched_nms(w["segs"][idx], w["scores"][idx], w["labels"][idx], c["iou_threshold"], c["min_score"],
                                 c["max_seg_num"], True, True, c["sigma"])
    return out


def official_nms(off, w):
    c, out = w["cfg"], {}
    for vid, idx in w["parts"]:
        out[vid] = off.batched_nms(w["segs"][idx], w["scores"][idx], w["labels"][idx], c["iou_threshold"],
                                   c["min_score"], c["max_seg_num"], use_soft_nms=True, multiclass=True, sigma=c["sigma"])
    return out


def same_detections(a: dict, b: dict, rel: float = 1e-6, seg_tol: float = 0.0):
    "Same (label, start, end) per video and scores within `rel`? Returns (ok, max relative score difference)."
    worst, ok = 0.0, a.keys() == b.keys()
    for k in a:
        if not ok: break
        (s1, c1, l1), (s2, c2, l2) = a[k], b[k]
        if len(c1) != len(c2): return False, float("inf")
        key = lambda s, l: np.lexsort((s[:, 1].numpy(), s[:, 0].numpy(), l.numpy()))
        o1, o2 = key(s1, l1), key(s2, l2)
        if not (torch.allclose(s1[o1], s2[o2], rtol=seg_tol, atol=seg_tol) and torch.equal(l1[o1].long(), l2[o2].long())):
            return False, float("inf")
        if len(c1): worst = max(worst, float(((c1[o1] - c2[o2]).abs() / c2[o2].abs()).max()))
    return ok and worst <= rel, worst


def bench_nms(off, args, rows):
    for w in nms_workloads(args.scale):
        fns = {"ours (evaluation)": lambda w=w: ours_eval_nms(w), "ours (per video)": lambda w=w: ours_per_video_nms(w)}
        if off: fns = {"official": lambda w=w: official_nms(off, w), **fns}
        ts, outs = interleaved(fns, args.nms_repeats, label=f"Soft-NMS {w['name']}")
        n_groups = len(torch.unique(w["video"] * 100000 + w["labels"]))
        desc = f"Soft-NMS {w['name']} ({len(torch.unique(w['video']))} videos, {n_groups} groups)"
        for k in ("ours (evaluation)", "ours (per video)"):
            check = same_detections(outs[k], outs["official"]) if off else None
            rows.append(row(f"{desc}, {k.split('(')[1][:-1]}", ts.get("official"), ts[k], check))


def row(name, t_off, t_ours, check=None, note=""):
    ratio = statistics.median(t_off) / statistics.median(t_ours) if t_off else None
    eq = "-" if check is None else (("yes" if check[0] else "NO") + f" ({check[1]:.1e})")
    return dict(workload=name, official=fmt(t_off), ours=fmt(t_ours), ratio=ratio, equal=eq, note=note,
                official_s=t_off, ours_s=t_ours)


# -- heads -------------------------------------------------------------------------------------------------------
def bench_heads(off, args, rows):
    ours, cfg, theirs, _ = models(off, CHARADES_YAML)
    ours.eval(); theirs is not None and theirs.eval()
    D, B, T, L = cfg.model.fpn_dim, 2, 288, len(ours.strides)
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(B, D, T >> l, generator=g) for l in range(L)]
    masks = [torch.ones(B, T >> l, dtype=torch.bool) for l in range(L)]
    masks[0][1, 250:] = False
    for l in range(1, L): masks[l] = masks[l - 1][:, ::2]
    tad_q = unit(torch.randn(157, cfg.model.text_dim, generator=g))
    counts = [40, 56]
    mr_qs = [unit(torch.randn(n, cfg.model.text_dim, generator=g)) for n in counts]
    mr_pad = torch.zeros(B, max(counts), cfg.model.text_dim)
    for v, q in enumerate(mr_qs): mr_pad[v, :len(q)] = q

    def our_fwd(q):
        hc, hr = ours.cls_head.features(feats, masks), ours.reg_head.features(feats, masks)
        return ours.cls_head(hc, masks, q), ours.reg_head(hr, masks, q)

    def their_fwd(q, task):
        m3 = [m[:, None] for m in masks]
        return theirs.cls_head(feats, m3, q, task=task), theirs.reg_head(feats, m3, q, task=task)

    for name, q_ours, q_off, task, ns in (("TAD 157 classes", tad_q, tad_q, "tad", [157, 157]),
                                          ("MR 40 + 56 queries", mr_pad, mr_qs, "mr", counts)):
        fns = {"ours": lambda q=q_ours: our_fwd(q)}
        if theirs is not None: fns = {"official": lambda q=q_off, t=task: their_fwd(q, t), **fns}
        with torch.no_grad():
            ts, outs = interleaved(fns, args.repeats, label=f"heads {name}")
        check = None
        if theirs is not None:
            (c1, r1), (c2, r2) = outs["ours"], outs["official"]
            worst = 0.0
            for l in range(L):
                for v, n in enumerate(ns):
                    a_c, a_r = c1[l][v, :, :n], r1[l][v, :, :n]
                    if task == "tad": b_c, b_r = c2[l][v].T, r2[l][v].permute(2, 0, 1)
                    else: b_c, b_r = c2[l][v].T, r2[l][v].permute(2, 0, 1)
                    for a, b in ((a_c, b_c), (a_r, b_r)):
                        worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)))
            check = (worst <= 1e-5, worst)
        rows.append(row(f"heads forward, {name}, batch 2, T=288", ts.get("official"), ts["ours"], check))


# -- training and inference ----------------------------------------------------------------------------------------
def unit(x):
    "Rows of unit length, like CLIP text embeddings."
    return x / x.norm(dim=-1, keepdim=True)


def synth_samples(cfg, n_videos, T, n_classes, seed, tad_q, mr_queries=(3, 6)):
    "Videos of length T with a few actions (TAD) and a few sentence queries (MR), as VideoSample."
    g = torch.Generator().manual_seed(seed)
    out = []
    for v in range(n_videos):
        feats = torch.randn(cfg.model.input_dim, T, generator=g)
        def segs(n):
            c = torch.rand(n, generator=g) * T
            ln = 4 + torch.rand(n, generator=g) * T / 6
            return torch.stack([(c - ln / 2).clamp(0, T - 1), (c + ln / 2).clamp(1, T)], 1)
        n_act = int(torch.randint(2, 6, (1,), generator=g))
        tad = TaskAnnotation(segs(n_act), torch.randint(0, n_classes, (n_act,), generator=g), tad_q)
        nq = int(torch.randint(mr_queries[0], mr_queries[1] + 1, (1,), generator=g))
        mr = TaskAnnotation(segs(nq), torch.arange(nq), unit(torch.randn(nq, cfg.model.text_dim, generator=g)))
        out.append(VideoSample(f"v{seed}_{v}", feats, 30.0, T * 16 / 30.0, 16, 16, tad=tad, mr=mr))
    return out


def official_video(s, task, device="cpu"):
    a = s.task(task)
    d = dict(video_id=s.video_id, feats=s.feats.to(device), segments=a.segments.float().to(device),
             labels=a.labels.long().to(device), fps=s.fps, duration=s.duration, feat_stride=s.feat_stride,
             feat_num_frames=s.num_frames, q_feats=a.queries.to(device))
    if task == "mr": d["queries"] = [f"q{i}" for i in range(a.num_queries)]
    return d


def train_step_fns(off, yaml, T, n_classes, seed=0, device="cpu", model_override=None):
    "(ours step, official step or None, check) for one training iteration at an official config."
    ours, cfg, theirs, ocfg = models(off, yaml, seed, device, model_override)
    tad_q = unit(torch.randn(n_classes, cfg.model.text_dim, generator=torch.Generator().manual_seed(7)))
    samples = synth_samples(cfg, cfg.data.batch_size, T, n_classes, seed, tad_q)
    batch = collate(samples, cfg.data.max_seq_len, training=True, max_stride=ours.max_stride).to(device)
    tc = cfg.train
    loss = UniMDLoss(tc, ours.strides, cfg.model.regression_range, num_classes=n_classes)
    opt = torch.optim.AdamW(param_groups(ours, tc.weight_decay), lr=tc.learning_rate)
    ema = EMA(ours, tc.ema_decay)
    ours.train()
    rec = {}

    def ours_step(bf16=False):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):   # as Trainer does it
            out = ours(batch)
        res = loss(out, batch)
        res["total"].backward()
        opt.step(); ema.update(ours)
        rec.setdefault("ours_bf16" if bf16 else "ours", res["total"].item())
        return res["total"].item()

    if theirs is None: return ours_step, None, rec
    theirs.train()
    oopt = off.make_optimizer(theirs, ocfg["opt"])
    oema = off.ModelEma(theirs)
    vl = [{"tad": official_video(s, "tad", device), "mr": official_video(s, "mr", device)} for s in samples]
    tasks = [["tad", "mr"] for _ in samples]
    w_tad, w_mr = ocfg["train_cfg"]["tad_loss_weight"], ocfg["train_cfg"]["mr_loss_weight"]

    def their_step():
        oopt.zero_grad(set_to_none=True)
        losses, *_ = theirs(vl, tasks, 0, ocfg["opt"]["epochs"])
        total = losses["tad"]["final_loss"] * w_tad + losses["mr"]["final_loss"] * w_mr
        total.backward()
        oopt.step(); oema.update(theirs)
        rec.setdefault("official", total.item())
        return total.item()

    return ours_step, their_step, rec


def bench_train(off, args, rows):
    for yaml, T, ncls, name in ((EGO4D_YAML, 1024, 110, "Ego4D config, T=1024, batch 2, both tasks"),
                                (CHARADES_YAML, 288, 157, "Charades config, T=288, batch 2, both tasks")):
        ours_step, their_step, rec = train_step_fns(off, yaml, T, ncls)
        fns = {"ours": ours_step} if their_step is None else {"official": their_step, "ours": ours_step}
        if args.bf16: fns["ours bf16"] = lambda: ours_step(bf16=True)
        ts, _ = interleaved(fns, args.train_repeats, warmup=0, label=f"training {name}")   # first losses compared
        check = None
        if their_step is not None:
            rel = abs(rec["ours"] - rec["official"]) / abs(rec["official"])
            check = (rel <= 1e-5, rel)
        rows.append(row(f"training iteration, {name}", ts.get("official"), ts["ours"], check,
                        "first-iteration loss compared"))
        if args.bf16:
            rows.append(row(f"training iteration, {name}, ours with train.precision: bf16", ts.get("official"),
                            ts["ours bf16"], None, "bf16 autocast: outputs differ by design"))


def bench_infer(off, args, rows):
    ours, cfg, theirs, ocfg = models(off, EGO4D_YAML)
    ours.eval(); theirs is not None and theirs.eval()
    tad_q = unit(torch.randn(110, cfg.model.text_dim, generator=torch.Generator().manual_seed(7)))
    samples = synth_samples(cfg, 3, 1024, 110, 5, tad_q)
    if theirs is not None:   # the official test config decodes with its own settings: ours takes them over
        cfg.test.__dict__.update({k: ocfg["test_cfg"][k] for k in ("pre_nms_thresh", "pre_nms_topk", "iou_threshold",
                                  "min_score", "max_seg_num", "nms_sigma", "duration_thresh") if k in ocfg["test_cfg"]})
    batches = [collate([s], cfg.data.max_seq_len, training=False, max_stride=ours.max_stride) for s in samples]

    def ours_run():
        return [predict(ours, b, cfg.test) for b in batches]

    def their_run():
        with torch.no_grad():
            return [theirs([{"tad": official_video(s, "tad"), "mr": official_video(s, "mr")}], [["tad", "mr"]])
                    for s in samples]

    fns = {"ours": ours_run} if theirs is None else {"official": their_run, "ours": ours_run}
    ts, outs = interleaved(fns, args.repeats, label="inference per video")
    ts = {k: [t / len(samples) for t in v] for k, v in ts.items()}
    check = None
    if theirs is not None:
        res = [same_detections({0: (a[t][0]["segments"], a[t][0]["scores"], a[t][0]["labels"])},
                               {0: (b[t][0]["segments"], b[t][0]["scores"], b[t][0]["labels"])}, 1e-4, 1e-3)
               for a, b in zip(outs["ours"], outs["official"]) for t in ("tad", "mr")]
        check = (all(r[0] for r in res), max(r[1] for r in res))
    rows.append(row("inference per video, Ego4D config, T=1024, both tasks", ts.get("official"), ts["ours"], check,
                    "top-50 scores compared"))


def bench_equality(off, args, rows):
    """Training step by step against the official code: same initial weights, dropout and drop-path off, the same
    batches fed to both (no sampler, no crops), `--steps` optimizer steps; compares at every step the losses, the
    learning rate, the gradient norm (before clipping), the weights and the EMA weights. Prints the first step
    where one differs by more than 1e-5 relative, and writes every step to --json."""
    if off is None:
        print("equality: needs --official"); return
    import math
    from unimd.train import warmup_cosine
    tiny = ROOT_SHARED/"fixtures"/"official_model"/"charades_tiny"/"charades_tiny_fixture.yaml"
    yaml_path = tiny if tiny.exists() else off.path/CHARADES_YAML
    cfg, _ = translate_official_config(yaml_path)
    ocfg = off.load_config(str(yaml_path))
    torch.manual_seed(0)
    ours = no_dropout(UniMD(cfg.model)); ours.train()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = off.make_meta_arch(ocfg["model_name"], **ocfg["model"])
    theirs.load_state_dict({k.removeprefix("module."): v for k, v in to_official_state_dict(ours).items()}, strict=True)
    no_dropout(theirs); theirs.train()
    ipe, tc, T = 2, cfg.train, cfg.data.max_seq_len      # 2 iterations per epoch: warm-up, then cosine, within the steps
    n_cls = ocfg["dataset"]["num_classes"]
    tad_q = unit(torch.randn(n_cls, cfg.model.text_dim, generator=torch.Generator().manual_seed(7)))
    batches = [synth_samples(cfg, cfg.data.batch_size, T, n_cls, 100 + i, tad_q) for i in range(args.steps)]
    loss = UniMDLoss(tc, ours.strides, cfg.model.regression_range, num_classes=n_cls)
    opt = torch.optim.AdamW(param_groups(ours, tc.weight_decay), lr=tc.learning_rate)
    total = (tc.warmup_epochs + tc.epochs) * ipe
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(tc.warmup_epochs * ipe, total, tc.eta_min / tc.learning_rate))
    ema = EMA(ours, tc.ema_decay)
    oopt = off.make_optimizer(theirs, ocfg["opt"])
    osched = off.make_scheduler(oopt, ocfg["opt"], ipe)
    oema = off.ModelEma(theirs)
    w_tad, w_mr = ocfg["train_cfg"]["tad_loss_weight"], ocfg["train_cfg"]["mr_loss_weight"]
    clip = ocfg["train_cfg"]["clip_grad_l2norm"]
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)

    # Some parameters have a zero gradient in exact arithmetic: biases whose per-channel constant a following
    # BatchNorm removes (the BiFPN's 1x1 convs; the last downsampling's LayerNorm and conv, which only feed the
    # BiFPN's top node). Their float32 gradient is rounding noise, which AdamW's first steps turn into +-lr (its update
    # is g / (|g| + eps)); they cannot change any output. They are found, not named: a float64 copy of our model takes
    # the first 5 batches, and a tensor whose float64 gradient is below 1e-12 of the largest on each is reported apart.
    # Integer buffers (BatchNorm's num_batches_tracked) too: the official ModelEma averages them like weights (and
    # truncates), ours copies them; BatchNorm with a momentum never reads them.
    probe = copy.deepcopy(ours).double()
    probe_loss = UniMDLoss(tc, ours.strides, cfg.model.regression_range, num_classes=n_cls)   # its own normaliser state
    zero_grad = None
    for samples in batches[:5]:                  # zero on every probed batch, not by chance on one
        pb = collate(samples, cfg.data.max_seq_len, training=True, max_stride=ours.max_stride)
        pb.feats = pb.feats.double()
        for tb in pb.tasks.values(): tb.queries = tb.queries.double()
        probe.zero_grad(set_to_none=True)
        probe_loss(probe(pb), pb)["total"].backward()
        grads = {k: p.grad for k, p in probe.named_parameters() if p.grad is not None}
        top = max(float(g.abs().max()) for g in grads.values())
        zero = {o.removeprefix("module.") for o, k in official_key_map(probe).items()
                if k in grads and float(grads[k].abs().max()) <= 1e-12 * top}
        zero_grad = zero if zero_grad is None else zero_grad & zero
    del probe
    noise = lambda k: k in zero_grad
    def sd_diff(a_model, b_sd, keep):
        a_sd = {k.removeprefix("module."): v for k, v in to_official_state_dict(a_model).items()}
        worst, where = 0.0, ""
        for k, b in b_sd.items():
            if not keep(k, b): continue
            a = a_sd[k]
            if not b.dtype.is_floating_point:
                d = 0.0 if torch.equal(a.long(), b.long()) else float("inf")
            else:
                d = float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
            if d > worst: worst, where = d, k
        return worst, where
    main = lambda k, b: b.dtype.is_floating_point and not noise(k)

    log, first = [], None
    for i, samples in enumerate(batches):
        batch = collate(samples, cfg.data.max_seq_len, training=True, max_stride=ours.max_stride)
        lr_o, lr_t = sched.get_last_lr()[0], osched.get_last_lr()[0]
        opt.zero_grad(set_to_none=True)
        res = loss(ours(batch), batch)
        res["total"].backward()
        gn_o = float(torch.nn.utils.clip_grad_norm_(ours.parameters(), tc.clip_grad_l2norm if tc.clip_grad_l2norm > 0 else math.inf))
        opt.step(); sched.step(); ema.update(ours)
        oopt.zero_grad(set_to_none=True)
        vl = [{"tad": official_video(s, "tad"), "mr": official_video(s, "mr")} for s in samples]
        losses, *_ = theirs(vl, [["tad", "mr"]] * len(vl), 0, ocfg["opt"]["epochs"])
        tot = losses["tad"]["final_loss"] * w_tad + losses["mr"]["final_loss"] * w_mr
        tot.backward()
        gn_t = float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), clip if clip > 0 else math.inf))
        oopt.step(); osched.step(); oema.update(theirs)
        w_d, w_k = sd_diff(ours, theirs.state_dict(), main)
        e_d, e_k = sd_diff(ema.module, oema.module.state_dict(), main)
        n_d, _ = sd_diff(ours, theirs.state_dict(), lambda k, b: noise(k))
        i_d, i_k = sd_diff(ema.module, oema.module.state_dict(), lambda k, b: not b.dtype.is_floating_point)
        rec = dict(step=i + 1, loss_ours=res["total"].item(), loss_official=tot.item(), lr_ours=lr_o, lr_official=lr_t,
                   grad_norm_ours=gn_o, grad_norm_official=gn_t, weights_rel=w_d, weights_worst=w_k, ema_rel=e_d, ema_worst=e_k,
                   bn_fed_bias_rel=n_d, ema_int_buffers_equal=i_d == 0.0)
        rec["loss_rel"], rec["lr_rel"], rec["grad_norm_rel"] = rel(rec["loss_ours"], rec["loss_official"]), rel(lr_o, lr_t), rel(gn_o, gn_t)
        log.append(rec)
        bad = [k for k in ("loss_rel", "lr_rel", "grad_norm_rel", "weights_rel", "ema_rel") if rec[k] > 1e-5]
        if bad and first is None: first = (i + 1, bad, rec)
    print(f"\nequality, {yaml_path.name}, {args.steps} steps, {ipe} iterations per epoch:")
    print("step  loss ours / official  rel   lr rel   grad-norm rel   weights rel (worst)   EMA rel (worst)")
    for r in log:
        if r["step"] <= 3 or r["step"] % 10 == 0 or (first and r["step"] == first[0]):
            print(f"{r['step']:4d}  {r['loss_ours']:.6g} / {r['loss_official']:.6g}  {r['loss_rel']:.1e}  {r['lr_rel']:.1e}  "
                  f"{r['grad_norm_rel']:.1e}  {r['weights_rel']:.1e} ({r['weights_worst']})  {r['ema_rel']:.1e} ({r['ema_worst']})")
    print("first step beyond 1e-5 relative:", "none" if first is None else f"{first[0]} ({', '.join(first[1])})")
    print(f"apart: {len(zero_grad)} tensors with a zero gradient in exact arithmetic ({', '.join(sorted(zero_grad))}) differ by up to "
          f"{max(r['bn_fed_bias_rel'] for r in log):.1e} relative (rounding noise turned into +-lr by AdamW, see "
          f"bench_equality); EMA integer buffers equal at every step: "
          f"{all(r['ema_int_buffers_equal'] for r in log)}")
    worst = {k: max(r[k] for r in log) for k in ("loss_rel", "lr_rel", "grad_norm_rel", "weights_rel", "ema_rel")}
    rows.append(dict(workload=f"training equality, {args.steps} steps ({yaml_path.name})", official="-", ours="-", ratio=None,
                     equal=("yes" if first is None else f"NO from step {first[0]}") + f" (max rel: {max(worst.values()):.1e})",
                     note=json.dumps(worst), official_s=None, ours_s=None, steps=log))


def peak_child(side, official):
    "Run 3 training iterations of one side in this (fresh) process and print its peak RSS."
    torch.set_num_threads(1)
    off = load_official(official) if side == "official" else None
    ours_step, their_step, _ = train_step_fns(off, EGO4D_YAML, 1024, 110)
    for _ in range(3): (their_step if side == "official" else ours_step)()
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}))


def peak_rss_bytes():
    "This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives exec, so a child would report its parent's peak."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"): return int(line.split()[1]) * 1024
    except OSError: pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_memory(off, args, rows):
    def child(side):
        cmd = [sys.executable, __file__, "--_peak", side] + (["--official", str(off.path)] if off else [])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode: return None       # e.g. killed by the kernel's OOM killer on a busy machine
        return json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_bytes"] / 1e9
    sides = ["official", "ours"] if off else ["ours"]
    peaks = {s: child(s) for s in sides}
    o, u = peaks.get("official"), peaks["ours"]
    g = lambda x: f"{x:.2f} GB" if x else "failed"
    rows.append(dict(workload="peak RSS, 3 training iterations, Ego4D config (GB)", official=g(o) if off else "-",
                     ours=g(u), ratio=(o / u) if o and u else None, equal="-", note="", official_s=o, ours_s=u))


# -- main --------------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, help="checkout of the official UniMD repository (omit: our side only)")
    ap.add_argument("--rows", default="nms,heads,train,infer,memory",
                    help="comma-separated subset of nms,heads,train,infer,memory,equality")
    ap.add_argument("--steps", type=int, default=50, help="optimizer steps of the equality check")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--nms-repeats", type=int, default=3)
    ap.add_argument("--train-repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the Soft-NMS workloads' videos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="also time our training iteration under bf16 autocast")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top entries per workload and side")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--_peak", choices=["ours", "official"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a._peak: return peak_child(a._peak, a.official)
    off = load_official(a.official) if a.official else None
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if off: print(f"official: {off.path} (nms_1d_cpu {off.nms_build})")
    rows = []
    benches = dict(nms=bench_nms, heads=bench_heads, train=bench_train, infer=bench_infer, memory=bench_memory,
                   equality=bench_equality)
    PROFILE["on"] = a.profile
    for r in a.rows.split(","):
        n = len(rows)
        benches[r](off, a, rows)
        for x in rows[n:]:    # each row as soon as it is measured: a long run killed later keeps what it had
            print(f"[{x['workload']}: official {x['official']}, ours {x['ours']}, "
                  f"ratio {x['ratio'] or float('nan'):.2f}, equal {x['equal']}]", flush=True)
        print(f"[{r} done, load {os.getloadavg()[0]:.2f}]", flush=True)
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; ratio = official / ours (> 1: ours faster)")
    print(f"| workload | official | ours | ratio | outputs equal |\n|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"| {r['workload']} | {r['official']} | {r['ours']} | {ratio} | {r['equal']} |")
    if a.json: a.json.write_text(json.dumps(rows, indent=1, default=float))
    return rows


if __name__ == "__main__":
    main()
