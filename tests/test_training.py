"End-to-end training through the CLI: determinism, and a run killed mid-epoch that resumes to identical metrics."
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

CLI = [sys.executable, "-c", "from unimd.cli import main; raise SystemExit(main())"]
TINY = ["--config", str(ROOT/"configs"/"mdsynth_tiny.yaml"), "-o", "train.epochs=3", "--device", "cpu"]


def train(out, *extra, **kw):
    return subprocess.run(CLI + ["train", *TINY, "--out", str(out), *extra], capture_output=True, text=True,
                          timeout=900, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    r = train(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_same_seed_twice_gives_identical_metrics(reference, tmp_path):
    r = train(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((reference/"metrics.json").read_text())
    assert a == json.loads((tmp_path/"metrics.json").read_text())
    assert set(a) == {"tad", "mr"} and 0 <= a["tad"]["mAP"] <= 1 and 0 <= a["mr"]["R@1,IoU=0.5"] <= 1


def test_killed_mid_epoch_then_resumed_gives_identical_metrics(reference, tmp_path):
    p = subprocess.Popen(CLI + ["train", *TINY, "--out", str(tmp_path)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path/"last.pt"
    deadline = time.time() + 600
    while not ckpt.exists() and time.time() < deadline and p.poll() is None: time.sleep(0.05)
    time.sleep(0.5)            # well inside epoch 2 (an epoch takes several seconds)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL and not (tmp_path/"metrics.json").exists()
    done = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= done < 4, done
    r = train(tmp_path, "--resume")
    assert r.returncode == 0 and f"resumed after epoch {done}" in r.stdout, r.stderr[-3000:]
    assert json.loads((reference/"metrics.json").read_text()) == json.loads((tmp_path/"metrics.json").read_text())


def test_unknown_config_key_is_a_clear_error(tmp_path):
    cfg = tmp_path/"bad.yaml"
    cfg.write_text("model: {embd_dimm: 8}\n")
    r = subprocess.run(CLI + ["train", "--config", str(cfg), "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "unknown key 'embd_dimm'" in r.stderr and "embd_dim" in r.stderr and "Traceback" not in r.stderr


def test_feature_dim_mismatch_is_reported_before_training(tmp_path):
    r = subprocess.run(CLI + ["train", *TINY, "-o", "model.input_dim=48", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "32 channels, the config expects model.input_dim=48" in r.stderr
    assert not (tmp_path/"last.pt").exists()
