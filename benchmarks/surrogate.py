"""Surrogate benchmarks (nbs/45_surrogate): the cost of building each benchmark, and one training per benchmark at its
default size — individual TAD, individual MR and synchronized co-training — over seeds, with the CPU time of each run.

    python benchmarks/surrogate.py build  --out runs/surrogate [--size defaults]  # build time and memory, one process each
    python benchmarks/surrogate.py train  --out runs/surrogate --part 0/2 # the trainings (run parts side by side)
    python benchmarks/surrogate.py report --out runs/surrogate            # mean ± std tables (markdown)

Each (benchmark, seed) is one process at one torch thread that builds the datasets once and trains the three regimes
one after the other; results are appended to <out>/*.jsonl, and runs already there are skipped.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["charades_ann", "anet_ann", "ego4d_ann"]
REGIMES = ["tad", "mr", "sync"]
# the headline metric of each task per benchmark (the official evaluators' names)
COLUMNS = {"charades_ann": {"TAD frame mAP": "tad/mAP", "TAD det. mAP": "tad_detection/mAP", "MR R1@0.5": "mr/R@1,IoU=0.5",
                            "MR R1@0.7": "mr/R@1,IoU=0.7"},
           "anet_ann": {"TAD mAP": "tad/mAP", "MR R1@0.5": "mr/R@1,IoU=0.5", "MR R1@0.7": "mr/R@1,IoU=0.7", "MR mIoU": "mr/mIoU"},
           "ego4d_ann": {"TAD mAP": "tad/mAP", "TAD R1x@0.5": "tad/R1x@0.5", "MR R1@0.3": "mr/R@1,IoU=0.3", "MR R1@0.5": "mr/R@1,IoU=0.5",
                         "MR R5@0.3": "mr/R@5,IoU=0.3"}}


def flat_metrics(m: dict) -> dict:
    "An evaluation's {task: {metric: value}} as {'task/metric': float} (the names of `COLUMNS`); lists are left out."
    return {f"{t}/{k}": float(v) for t, d in m.items() if isinstance(d, dict) for k, v in d.items() if not isinstance(v, (list, dict))}


def _one_thread():
    import torch
    torch.set_num_threads(1)


def build_one(name: str, size: str = "config") -> dict:
    """Build the training and evaluation splits of `name`'s config with every video's features materialised (preload);
    `size='defaults'`: at the benchmark's default subset sizes (1,000 / 300) instead of the config's."""
    _one_thread()
    from unimd.config import load_config
    from unimd.data import build_dataset
    cfg = load_config(ROOT/"configs"/f"{name}.yaml")
    if size == "defaults":
        from unimd.surrogate import SURROGATE_OPTIONS
        cfg = cfg.copy(data=dict(options=dict(cfg.data.options, train_videos=SURROGATE_OPTIONS["train_videos"],
                                              eval_videos=SURROGATE_OPTIONS["eval_videos"])))
    t0, c0 = time.time(), time.process_time()
    out = dict(benchmark=name, size=size, cache=os.environ.get("UNIMD_GENERAL_CACHE_DIR", "settings"))
    for split in (cfg.data.train_split, cfg.data.val_split):
        ds = build_dataset(cfg.data, split)
        steps = [s.num_steps for s in ds.samples]
        out[split] = dict(videos=len(ds), tad=len(ds.videos_with("tad")), mr=len(ds.videos_with("mr")),
                          both=len(set(ds.videos_with("tad")) & set(ds.videos_with("mr"))),
                          tad_instances=sum(len(s.tad.segments) for s in ds.samples if s.tad is not None),
                          mr_queries=sum(s.mr.num_queries for s in ds.samples if s.mr is not None),
                          steps_mean=sum(steps) / len(steps), steps_max=max(steps),
                          feature_mb=sum(steps) * cfg.model.input_dim * 4 / 2**20)
    out.update(wall_s=time.time() - t0, cpu_s=time.process_time() - c0,
               max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def train_seed(name: str, seed: int, regimes, out_dir: Path):
    "The trainings of `name`'s config with `seed`, one per regime (the datasets built once), each evaluated at the end."
    _one_thread()
    from unimd.config import load_config
    from unimd.data import build_dataset
    from unimd.fusion import regime_stages
    from unimd.train import Trainer, set_deterministic
    cfg = load_config(ROOT/"configs"/f"{name}.yaml").copy(train=dict(seed=seed))
    c0 = time.process_time()
    tr, va = build_dataset(cfg.data, cfg.data.train_split), build_dataset(cfg.data, cfg.data.val_split)
    build_cpu = time.process_time() - c0
    for regime in regimes:
        set_deterministic()
        t0, c0 = time.time(), time.process_time()
        (stage,) = regime_stages(regime, cfg)     # tad, mr and sync train in one stage
        m = Trainer(stage, tr, out_dir/"ckpt"/f"{name}-{regime}-s{seed}", va, progress=False).fit()
        print(json.dumps(dict(benchmark=name, regime=regime, seed=seed, metrics=flat_metrics(m), wall_s=time.time() - t0,
                              cpu_s=time.process_time() - c0, build_cpu_s=build_cpu)), flush=True)


def _done(path: Path) -> list:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def _child(args_list: list, out_file: Path):
    "Run one job in a fresh process (its own memory peak and torch state); append each JSON line it prints."
    proc = subprocess.Popen([sys.executable, __file__, "_child", *args_list, "--out", str(out_file.parent)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("{"):
            with open(out_file, "a") as f: f.write(line.strip() + "\n")
            print(line.strip()[:300], flush=True)
    if proc.wait(): raise SystemExit(f"job {args_list} failed")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["build", "train", "report", "_child"])
    p.add_argument("rest", nargs="*")
    p.add_argument("--out", default=str(ROOT/"runs"/"surrogate"))
    p.add_argument("--benchmarks", nargs="*", default=BENCHMARKS)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--regimes", nargs="*", default=REGIMES, choices=REGIMES)
    p.add_argument("--size", default="config", choices=["config", "defaults"], help="build: the configs' subsets or the benchmarks' defaults")
    p.add_argument("--part", default="0/1", help="k/n: run every n-th job starting at k (to run parts side by side)")
    a = p.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.command == "_child":
        kind, *rest = a.rest
        if kind == "build": print(json.dumps(build_one(*rest)))
        else: train_seed(rest[0], int(rest[1]), rest[2].split(","), out)
        return
    k, n = map(int, a.part.split("/"))
    if a.command == "build":
        done = {(r["benchmark"], r.get("size", "config")) for r in _done(out/"build.jsonl")}
        for b in a.benchmarks[k::n]:
            if (b, a.size) not in done: _child(["build", b, a.size], out/"build.jsonl")
    elif a.command == "train":
        done = {(r["benchmark"], r["regime"], r["seed"]) for r in _done(out/"train.jsonl")}
        jobs = [(b, s) for s in a.seeds for b in a.benchmarks]
        for b, s in jobs[k::n]:
            todo = [r for r in a.regimes if (b, r, s) not in done]
            if todo: _child(["train", b, str(s), ",".join(todo)], out/"train.jsonl")
    else:
        report(out)


def report(out: Path):
    import numpy as np
    runs = _done(out/"train.jsonl")
    for b in BENCHMARKS:
        rs = [r for r in runs if r["benchmark"] == b]
        if not rs: continue
        print(f"\n### {b}\n")
        cols = COLUMNS[b]
        print("| row | seeds | " + " | ".join(cols) + " | CPU min per training (each run) |")
        print("|---" * (len(cols) + 3) + "|")
        rows = {"UniMD individual (TAD model, MR model)": ["tad", "mr"], "UniMD + Sync (one co-trained model)": ["sync"]}
        for label, regimes in rows.items():
            per_seed = {}
            for r in rs:
                if r["regime"] in regimes: per_seed.setdefault(r["seed"], {}).update({k: v for k, v in r["metrics"].items()
                                                                                     if r["regime"] == "sync" or k.split("/")[0].startswith(r["regime"])})
            cells = []
            for col in cols.values():
                v = np.array([100 * d[col] for d in per_seed.values() if col in d])
                cells.append("–" if not len(v) else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}")
            cpu = [r["cpu_s"] / 60 for r in rs if r["regime"] in regimes]
            if not cpu: continue
            print(f"| {label} | {len(per_seed)} | " + " | ".join(cells) + " | " + " / ".join(f"{c:.1f}" for c in cpu) + " |")
    for r in _done(out/"build.jsonl"):
        print(f"\nbuild {r['benchmark']} ({r.get('size', 'config')} sizes, text cache {r.get('cache', 'settings')}): {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['max_rss_mb']:.0f} MB; "
              + "; ".join(f"{k}: {json.dumps({kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()})}"
                          for k, v in r.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main()
