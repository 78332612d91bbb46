"""Issue 14: no silent wrong result, no raw traceback, no lost run. Bad inputs are given as a user types them (the
CLI's `main(argv)`, or a real `unimd` process where the traceback, signals or a second process matter)."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from unimd.cli import main
from unimd.config import ConfigError, config_from_dict, load_config

TINY = str(ROOT/"configs"/"mdsynth_tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-c", "from unimd.cli import main; raise SystemExit(main())"]


def unimd(*args, timeout=300, **kw):
    "A real `unimd` process (as typed in a shell)."
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=timeout, **kw)


def err(capsys, argv) -> str:
    "Run `main(argv)`, expect exit code 2 and one line `unimd: ...` on stderr; return that line."
    rc = main([str(a) for a in argv])
    e = capsys.readouterr().err.strip()
    assert rc == 2, e
    assert e.startswith("unimd: ") and len(e.splitlines()) == 1 and "Traceback" not in e, e
    return e


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    "One finished MD-Synth tiny training (3 epochs, seconds): its folder."
    out = tmp_path_factory.mktemp("runs")/"tiny"
    assert main(["train", "--config", TINY, "--out", str(out), "--device", "cpu"]) == 0
    return out


# ---------------------------------------------------------------------------------------------------------------
# silent wrong results

@pytest.mark.parametrize("key,value,allowed", [("test.nms_method", "Soft", "soft | hard | none"),
                                               ("test.nms_method", "softer", "soft | hard | none"),
                                               ("train.sampling", "sychronized", "individual | random | sync | alternating"),
                                               ("train.tasks", "[tad, mq]", "tad | mr"),
                                               ("train.center_sample", "radious", "radius | none"),
                                               ("test.nms_backend", "gpu", "auto | reference | cpu | compiled | triton")])
def test_enumerated_options_are_checked_where_the_config_is_read(capsys, tmp_path, key, value, allowed):
    e = err(capsys, ["train", "--config", TINY, "--out", tmp_path/"r", "-o", f"{key}={value}"])
    assert f"{key}: " in e and allowed in e and "mdsynth_tiny.yaml" in e
    assert not (tmp_path/"r").exists()   # refused before the run folder is touched
    import yaml
    sec, k = key.split(".")
    d = yaml.safe_load(Path(TINY).read_text())
    d.setdefault(sec, {})[k] = yaml.safe_load(value)
    (tmp_path/"c.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=allowed.replace("|", r"\|")): load_config(tmp_path/"c.yaml")


def test_nms_backends_of_the_config_are_those_of_nms():
    from unimd.config import CHOICES
    from unimd.nms import BACKENDS
    assert set(CHOICES["test.nms_backend"]) == {"auto", *BACKENDS}


def test_resume_refuses_a_changed_config_unless_the_change_is_safe_and_allowed(run, capsys, tmp_path):
    import shutil
    out = tmp_path/"r"
    shutil.copytree(run, out)
    for o in ("train.learning_rate=2e-3", "train.seed=5"):
        e = err(capsys, ["train", "--config", TINY, "--out", out, "--resume", "-o", o])
        assert f"{o.split('=')[0]}: " in e and "differs from the checkpoint" in e and "--allow-safe-changes" in e
    e = err(capsys, ["train", "--config", TINY, "--out", out, "--resume", "--allow-safe-changes", "-o", "train.learning_rate=2e-3"])
    assert "train.learning_rate" in e and "not among the safe changes" in e
    before = torch.load(out/"last.pt", weights_only=False)
    assert main(["train", "--config", TINY, "--out", str(out), "--resume", "--allow-safe-changes", "-o", "train.epochs=3",
                 "--no-eval"]) == 0
    after = torch.load(out/"last.pt", weights_only=False)
    assert before["epoch"] == 3 and after["epoch"] == 4 and after["config"]["train"]["epochs"] == 3
    assert after["config"]["train"]["learning_rate"] == before["config"]["train"]["learning_rate"]


def test_predict_features_are_checked_and_the_time_grid_is_stated(run, capsys, tmp_path):
    x = np.random.default_rng(0).normal(size=(48, 32)).astype(np.float32)
    np.save(tmp_path/"ok.npy", x); np.save(tmp_path/"t.npy", x.T.copy())
    y = x.copy(); y[3, 2] = np.nan; np.save(tmp_path/"nan.npy", y)
    ck = run/"last.pt"
    p = lambda *a: ["predict", "--ckpt", ck, "--features", *a]
    assert "features contain NaN/Inf (first bad steps: [3])" in err(capsys, p(tmp_path/"nan.npy"))
    assert "(32, 48) look transposed" in err(capsys, p(tmp_path/"t.npy"))
    assert err(capsys, p(tmp_path/"ok.npy", "--window", "0")) == "unimd: --window 0: expected ≥ 1 feature step"
    assert err(capsys, p(tmp_path/"ok.npy", "--overlap", "1.5")) == "unimd: --overlap 1.5: expected in [0, 1)"
    assert err(capsys, p(tmp_path/"ok.npy", "--fps", "0")) == "unimd: --fps 0: expected > 0"
    assert err(capsys, p(tmp_path/"ok.npy", "--fps", "-24")) == "unimd: --fps -24: expected > 0"
    assert main([str(a) for a in p(tmp_path/"ok.npy")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("time grid: 24 fps, a step every 4 frames, 16 frames per step (the checkpoint's feature_spec for what "
                     "--fps/--feat-stride did not give; pass both if your features differ): 48 steps = 8.5 s")
    assert main([str(a) for a in p(tmp_path/"ok.npy", "--fps", "30", "--feat-stride", "8")]) == 0
    assert "(given): 48 steps = 13.1 s" in capsys.readouterr().out


# a small THUMOS14-format dataset on disk (20 classes, 8-d features, 32-d class embeddings)
def thumos_world(root: Path, bad_gt: bool = False) -> list:
    rng = np.random.default_rng(0)
    db = {}
    for i in range(12):
        anns = [{"segment": [1.0 + j, 2.5 + j], "label": f"class {(i + j) % 20}", "label_id": (i + j) % 20} for j in range(2)]
        db[f"video_{i:02d}"] = {"subset": "Validation" if i < 8 else "Test", "duration": 12.0, "fps": 30.0, "annotations": anns}
    for c in range(20):   # every class appears (the loader expects 20)
        db["video_00"]["annotations"].append({"segment": [0.2 * c, 0.2 * c + 0.5], "label": f"class {c}", "label_id": c})
    if bad_gt:
        db["video_09"]["annotations"] = [{"segment": [5.0, 3.0], "label": "class 1", "label_id": 1},         # reversed
                                         {"segment": [float("nan"), 4.0], "label": "class 1", "label_id": 1},  # NaN
                                         {"segment": [6.0, 6.0], "label": "class 2", "label_id": 2},           # zero length
                                         {"segment": [7.0, 8.0], "label": "class 5", "label_id": 3},           # name ≠ id
                                         {"segment": [1.0, 2.0], "label": "class 2", "label_id": 2},
                                         {"segment": [1.0, 2.0], "label": "class 2", "label_id": 2}]           # duplicate
    (root/"thumos14").mkdir(parents=True, exist_ok=True)
    (root/"thumos14"/"thumos14.json").write_text(json.dumps({"database": db}))
    from unimd.datasets import write_fake_files
    from unimd.settings import load_settings
    s = load_settings(ROOT/"settings.ini", [f"general.data_root={root}"])
    for split in ("validation", "test"): write_fake_files("thumos14", s, split, dict(feature_dims=[8], text_dim=32), seed=1)
    cfg = root/"thumos.yaml"
    cfg.write_text(Path(TINY).read_text().replace("dataset: mdsynth", "dataset: thumos14")
                   .replace("options: {size: tiny, seed: 0}", "options: {feature_dims: [8], text_dim: 32}\n  train_split: validation\n  val_split: test")
                   .replace("input_dim: 32", "input_dim: 8").replace("tasks: [tad, mr]", "tasks: [tad]").replace("sampling: random", "sampling: individual"))
    return ["--config", cfg, "--set", f"general.data_root={root}"]


def test_ground_truth_is_cleaned_once_for_training_and_evaluation(tmp_path):
    from unimd.data import build_dataset, grid_to_sec
    from unimd.settings import load_settings
    thumos_world(tmp_path, bad_gt=True)
    s = load_settings(ROOT/"settings.ini", [f"general.data_root={tmp_path}"])
    cfg = config_from_dict(dict(data=dict(dataset="thumos14", options=dict(feature_dims=[8], text_dim=32))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(cfg.data, "test", s)
    msg = " ".join(str(w.message) for w in caught)
    for what in ("1 reversed TAD segments swapped (videos video_09)", "1 TAD segments with NaN/Inf dropped (videos video_09)",
                 "1 zero-length TAD segments kept (official rule) (videos video_09)",
                 "1 TAD segments whose label name is not that of their label_id dropped (videos video_09)",
                 "1 duplicated TAD segments kept (official rule) (videos video_09)"):
        assert what in msg, msg
    smp = ds.samples[ds.index_of("video_09")]
    train_gt = grid_to_sec(smp.tad.segments.double(), smp.fps, smp.feat_stride, smp.num_frames).numpy()
    eval_gt = np.array([a["segment"] for a in ds.tad_database()["database"]["video_09"]["annotations"]])
    # training targets and evaluation ground truth: the same 4 segments, the reversed one swapped in both
    np.testing.assert_allclose(train_gt, eval_gt, atol=1e-5)
    np.testing.assert_allclose(eval_gt, [[3, 5], [6, 6], [1, 2], [1, 2]])
    # the `clip` rule drops zero-length and duplicated segments (for both, again)
    from unimd.annotations import VideoRecord, clean_record
    counts, videos = {}, {}
    r = clean_record(VideoRecord("v", 10.0, tad_segments=[[1, 2], [1, 2], [3, 3]], tad_labels=[0, 0, 0]), {}, counts, videos, "clip")
    assert r.tad_segments.tolist() == [[1, 2]] and counts == {"zero-length TAD segments dropped": 1, "duplicated TAD segments dropped": 1}


def test_an_evaluation_split_without_ground_truth_is_refused_before_training(capsys, tmp_path):
    e = err(capsys, ["train", "--config", TINY, "--out", tmp_path/"r", "-o", "data.options.num_val=0"])
    assert e == ("unimd: data.val_split='val': mdsynth/val has 0 videos and no ground truth for tad, mr: nothing to "
                 "evaluate. Choose a split with annotations or pass --no-eval")
    assert not (tmp_path/"r"/"last.pt").exists()


# ---------------------------------------------------------------------------------------------------------------
# errors that arrived late or as tracebacks

def test_bad_validation_features_stop_before_the_first_step_and_data_check_deep_reports_them(capsys, tmp_path):
    args = thumos_world(tmp_path)
    feats = tmp_path/"thumos14"/"features"/"i3d"
    x = np.load(feats/"video_10.npy"); x[5, 1] = np.inf; np.save(feats/"video_10.npy", x)
    (feats/"video_11.npy").write_bytes((feats/"video_11.npy").read_bytes()[:200])   # truncated
    e = err(capsys, ["train", *args, "--out", tmp_path/"r"])
    assert "video_10.npy: i3d features contain NaN/Inf (first bad steps: [5])" in e
    assert not (tmp_path/"r"/"last.pt").exists()
    rc = main(["data", "check", "--dataset", "thumos14", "--deep", "-o", "feature_dims=[8]", "-o", "text_dim=32",
               "--set", f"general.data_root={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 1 and "2 bad file(s)" in out
    assert "bad file (test): " in out and "video_10.npy: i3d features contain NaN/Inf" in out and "video_11.npy: cannot read features" in out


def test_bad_inputs_are_one_line_exit_2_without_traceback(run, capsys, tmp_path):
    ck = run/"last.pt"
    (tmp_path/"zero.pt").write_bytes(b"")
    (tmp_path/"trunc.pt").write_bytes(ck.read_bytes()[:5000])
    (tmp_path/"corrupt.pt").write_bytes(b"not a checkpoint at all" * 10)
    torch.save([1, 2, 3], tmp_path/"list.pt")
    for f, what in (("zero.pt", "empty file (0 bytes)"), ("trunc.pt", "not a readable checkpoint"),
                    ("corrupt.pt", "not a readable checkpoint"), ("list.pt", "not a unimd checkpoint"), ("none.pt", "checkpoint not found")):
        p = tmp_path/f
        assert what in err(capsys, ["eval", "--ckpt", p]) and str(p) in err(capsys, ["eval", "--ckpt", p])
        assert what in err(capsys, ["predict", "--ckpt", p, "--features", tmp_path/"x.npy"])
        r = tmp_path/f"run_{f}"; r.mkdir()
        if p.exists(): (r/"last.pt").write_bytes(p.read_bytes())
        if f != "none.pt": assert what in err(capsys, ["train", "--config", TINY, "--out", r, "--resume"])
    from conftest import SHARED
    yml = SHARED/"fixtures"/"official_model"/"charades_tiny"/"charades_tiny_fixture.yaml"
    if yml.is_file():   # an official checkpoint that is empty, truncated or missing
        for f, what in (("zero.pt", "empty file (0 bytes); expected a checkpoint (official .pth.tar)"),
                        ("trunc.pt", "not a readable checkpoint (official .pth.tar)"), ("none.pt", "checkpoint (official .pth.tar) not found")):
            assert what in err(capsys, ["eval", "--official-ckpt", tmp_path/f, "--config", yml])
    assert err(capsys, ["eval", "--official-ckpt", tmp_path/"zero.pt", "--config", tmp_path/"no.yaml"]) == \
        f"unimd: {tmp_path/'no.yaml'}: config file not found"
    e = err(capsys, ["eval", "--ckpt", ck, "--config", ROOT/"configs"/"mdsynth_small.yaml"])
    assert "weights of another model size" in e and "use the config the checkpoint was trained with" in e
    (tmp_path/"bad.yaml").write_text("name: x\ntrain: {epochs: 3\nmodel: {}\n")
    e = err(capsys, ["train", "--config", tmp_path/"bad.yaml"])
    assert e.startswith(f"unimd: {tmp_path/'bad.yaml'}:3:6: not valid YAML"), e
    assert err(capsys, ["train", "--config", TINY, "-o", "data.batch_size=0"]).endswith("data.batch_size: 0 is out of range; expected ≥ 1")
    assert err(capsys, ["train", "--config", TINY, "-o", "data.batch_size=-2"]).endswith("data.batch_size: -2 is out of range; expected ≥ 1")
    assert err(capsys, ["train", "--config", TINY, "-o", "train.learning_rate=-1e-4"]).endswith(
        "train.learning_rate: -0.0001 is out of range; expected > 0")
    assert "data.options.sise: unknown MD-Synth option (did you mean 'size'?)" in \
        err(capsys, ["train", "--config", TINY, "--out", tmp_path/"s", "-o", "data.options.sise=tiny"])
    # annotation files
    args = thumos_world(tmp_path/"w")
    ann = tmp_path/"w"/"thumos14"/"thumos14.json"
    good = json.loads(ann.read_text())
    ann.write_text(json.dumps({"videos": good["database"]}))
    assert f"{ann}: no 'database' mapping (found ['videos'])" in err(capsys, ["train", *args, "--out", tmp_path/"a1"])
    db = json.loads(json.dumps(good)); del db["database"]["video_03"]["duration"]; ann.write_text(json.dumps(db))
    assert f"{ann}: video 'video_03' has duration None; expected 'duration': seconds > 0" in err(capsys, ["train", *args, "--out", tmp_path/"a2"])
    db = json.loads(json.dumps(good)); db["database"]["video_04"]["annotations"][1]["segment"] = [1, 2, 3]; ann.write_text(json.dumps(db))
    assert f"{ann}: video 'video_04', annotation 1: segment [1, 2, 3]; expected [start, end] in seconds" in \
        err(capsys, ["train", *args, "--out", tmp_path/"a3"])
    # settings
    ini = (ROOT/"settings.ini").read_text()
    (tmp_path/"bad.ini").write_text(ini.replace("device = auto\n", "device = auto\nthis line is no setting\n"))
    e = err(capsys, ["train", "--config", TINY, "--settings", tmp_path/"bad.ini"])
    assert ":" in e and "cannot parse 'this line is no setting'; expected 'key = value'" in e
    (tmp_path/"dup.ini").write_text(ini.replace("device = auto\n", "device = auto\ndevice = cpu\n"))
    assert "[general] device is set twice; keep one line" in err(capsys, ["train", "--config", TINY, "--settings", tmp_path/"dup.ini"])
    assert err(capsys, ["train", "--config", TINY, "--settings", tmp_path/"nope.ini"]) == \
        f"unimd: {tmp_path/'nope.ini'}: settings file not found (--settings or UNIMD_SETTINGS)"
    assert err(capsys, ["train", "--config", TINY, "--set", "general.device=gpu"]).endswith(
        "[general] device: 'gpu' is not a torch device; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        assert err(capsys, ["train", "--config", TINY, "--device", "cuda"]) == \
            "unimd: --device: 'cuda' but CUDA is not available on this machine; use cpu or auto"
    (tmp_path/"dir").mkdir()
    t0 = time.time()
    assert err(capsys, ["eval", "--ckpt", ck, "--out", tmp_path/"dir"]).endswith(
        "is a folder; expected the path of the JSON file to write, e.g. --out eval.json")
    assert time.time() - t0 < 5   # refused before the evaluation, not after it


def test_a_real_process_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    r = unimd("eval", "--ckpt", tmp_path/"none.pt")
    assert r.returncode == 2 and r.stderr == f"unimd: {tmp_path/'none.pt'}: checkpoint not found\n"
    r = unimd("eval", "--ckpt", tmp_path/"none.pt", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "CheckpointError" in r.stderr


def test_numeric_strings_are_numbers(tmp_path):
    (tmp_path/"c.yaml").write_text(Path(TINY).read_text().replace("learning_rate: 0.001", "learning_rate: 1e-4"))
    assert load_config(tmp_path/"c.yaml").train.learning_rate == 1e-4
    from unimd.cli import _overrides
    cfg = load_config(TINY, _overrides(["train.learning_rate=1e-4", "train.epochs=3", "data.batch_size=2.0"]))
    assert (cfg.train.learning_rate, cfg.train.epochs, cfg.data.batch_size) == (1e-4, 3, 2)
    with pytest.raises(ConfigError, match="train.learning_rate: expected a number, got 'fast'"):
        load_config(TINY, _overrides(["train.learning_rate=fast"]))


# ---------------------------------------------------------------------------------------------------------------
# the run folder

def test_a_locked_run_folder_refuses_a_second_training_and_is_taken_over_when_its_owner_dies(tmp_path):
    out = tmp_path/"r"
    a = subprocess.Popen([*CLI, "train", "--config", TINY, "--out", str(out), "-o", "train.epochs=500"],
                         cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        locked = lambda: (out/".lock").exists() and f"pid {a.pid}" in (out/".lock").read_text()
        for _ in range(3000):   # startup takes seconds, more on a busy machine
            if locked() or a.poll() is not None: break
            time.sleep(0.1)
        assert locked(), f"the first training did not lock {out} (exit code {a.poll()})"
        b = unimd("train", "--config", TINY, "--out", out, "-o", "train.epochs=500", "--resume")
        assert b.returncode == 2 and b.stderr.startswith(f"unimd: {out}: run folder in use by pid {a.pid} on "), b.stderr
        assert "Traceback" not in b.stderr
    finally:
        a.kill(); a.wait()
    # the owner is dead: the next training takes the folder over (and resumes what the first one saved)
    c = unimd("train", "--config", TINY, "--out", out, "-o", "train.epochs=500", "--resume", "--allow-safe-changes",
              "-o", "train.early_stop_epochs=1", "--no-eval")
    assert c.returncode == 0, c.stderr
    assert not list(out.glob("*.tmp"))


def test_concurrent_saves_use_their_own_temporary_files(tmp_path):
    code = ("import sys, torch; from unimd.runs import atomic_save\n"
            "for i in range(25): atomic_save({'config': {}, 'model': {'w': torch.full((20000,), float(sys.argv[1]))}}, sys.argv[2])")
    ps = [subprocess.Popen([sys.executable, "-c", code, str(k), str(tmp_path/"last.pt")], cwd=ROOT, env=ENV, stderr=subprocess.PIPE)
          for k in (1, 2)]
    errs = [p.communicate(timeout=120)[1] for p in ps]
    assert [p.returncode for p in ps] == [0, 0], errs
    w = torch.load(tmp_path/"last.pt", weights_only=False)["model"]["w"]   # whole: one process's checkpoint
    assert w.unique().tolist() in ([1.0], [2.0]) and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_existing_run_is_not_overwritten_and_the_default_folder_follows_the_overrides(capsys, tmp_path):
    base = ["train", "--config", TINY, "--set", f"general.output_dir={tmp_path}", "-o", "train.early_stop_epochs=1", "--no-eval"]
    assert main(base + ["-o", "train.seed=2"]) == 0 and main(base + ["-o", "train.seed=3"]) == 0
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert len(runs) == 2 and all(r.startswith("mdsynth_tiny-") and len(r) == len("mdsynth_tiny-") + 8 for r in runs)
    capsys.readouterr()
    e = err(capsys, base + ["-o", "train.seed=2"])
    assert "already holds a run (last.pt); pass --resume to continue it, --overwrite to replace it" in e
    assert main(base + ["-o", "train.seed=2", "--overwrite"]) == 0


def test_sigterm_stops_torchrun_and_every_worker(tmp_path):
    out = tmp_path/"ddp"
    p = subprocess.Popen([*CLI, "train", "--config", TINY, "--out", str(out), "--nproc", "2",
                          "-o", "train.epochs=500", "--device", "cpu"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def ours():
        pids = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and str(out).encode() in (d/"cmdline").read_bytes(): pids.append(int(d.name))
            except OSError: pass
        return pids
    try:
        for _ in range(1200):   # launcher, torchrun and two workers
            if len(ours()) >= 4 and (out/"last.pt").exists(): break
            time.sleep(0.1)
        assert len(ours()) >= 4
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        for _ in range(300):
            if not ours(): break
            time.sleep(0.1)
        assert ours() == []
    finally:
        for pid in ours():
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass


def test_the_ddp_claim_is_qualified_where_it_appears():
    readme = (ROOT/"README.md").read_text()
    i = readme.index("computes what one")
    assert "dropout and drop-path are off" in readme[i:i + 200]
    nb = (ROOT/"nbs"/"51_distributed.ipynb").read_text()
    assert "with dropout and drop-path off, the run computes what one process would" in nb


def test_fusion_does_not_import_train():
    r = subprocess.run([sys.executable, "-c", "import sys, unimd.fusion; assert 'unimd.train' not in sys.modules"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
