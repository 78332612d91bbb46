"Trainer checkpoints (interval, weights-only EMA file) and the optional bf16 precision."
import math

import pytest
import torch

from unimd.config import ConfigError, config_from_dict
from unimd.detect import Detector
from unimd.synth import make_mdsynth
from unimd.train import AUTO_CHECKPOINT_EVERY, Trainer, checkpoint_due


def tiny_cfg(**train):
    return config_from_dict(dict(
        data=dict(dataset="mdsynth", options=dict(size="tiny"), max_seq_len=160, batch_size=4),
        model=dict(input_dim=32, embd_dim=16, fpn_dim=16, head_dim=32, text_dim=32, query_fc_dim=32, fpn_layers=1),
        train=dict(dict(learning_rate=1e-3, epochs=2, warmup_epochs=1, tasks=["tad", "mr"], sampling="random"), **train),
        test=dict(pre_nms_topk=200, max_seg_num=50)))


@pytest.fixture(scope="module")
def data():
    va = make_mdsynth("tiny", 0, "val")
    va.samples = va.samples[:4]
    return make_mdsynth("tiny", 0, "train"), va


def test_fit_writes_last_and_a_weights_only_ema_file_that_loads_for_detection(data, tmp_path):
    t = Trainer(tiny_cfg(epochs=1, warmup_epochs=0), data[0], tmp_path, data[1], progress=False)
    t.fit(evaluate_at_end=False)
    last = torch.load(tmp_path/"last.pt", weights_only=False)
    ema = torch.load(tmp_path/"ema.pt", weights_only=False)
    assert ema["weights"] == "ema" and ema["epoch"] == last["epoch"] == 1 and ema["config"] == last["config"]
    assert "optimizer" not in ema and "ema" not in ema and ema["meta"]["dataset"] == last["meta"]["dataset"]
    assert ema["model"].keys() == last["ema"].keys()
    assert all(torch.equal(ema["model"][k], last["ema"][k]) for k in ema["model"])
    assert not all(torch.equal(last["model"][k], last["ema"][k]) for k in last["ema"])   # really the EMA, not the raw weights
    assert (tmp_path/"ema.pt").stat().st_size < 0.6 * (tmp_path/"last.pt").stat().st_size
    det = Detector.from_checkpoint(tmp_path/"ema.pt")
    assert all(torch.equal(det.model.state_dict()[k], last["ema"][k]) for k in last["ema"])


def test_checkpoint_interval_from_the_config(data, tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(Trainer, "save", lambda self, name="last.pt": saved.append(self.epoch))
    monkeypatch.setattr(Trainer, "save_ema", lambda self, name="ema.pt": None)
    cfg = tiny_cfg(epochs=2, warmup_epochs=1, checkpoint_every=2)        # 3 epochs in all
    Trainer(cfg, data[0], tmp_path, progress=False).fit(evaluate_at_end=False)
    assert saved == [2, 3]


def test_auto_interval_saves_every_epoch_only_while_epochs_outlast_saves():
    run = lambda epoch_s, save_s: [e for e in range(1, 13) if checkpoint_due(e, 12, 0, epoch_s, save_s, (e - 1) // 5 * 5)]
    assert run(10.0, 1.0) == list(range(1, 13))
    # short epochs: the last save was after epoch 5k, so the next is due at 5k+5 (and after the last epoch)
    assert run(1.0, 10.0) == [5, 10, 12] and AUTO_CHECKPOINT_EVERY == 5
    assert [e for e in range(1, 8) if checkpoint_due(e, 7, 3, 1.0, 0.0, 0)] == [3, 6, 7]


def test_bf16_precision_trains_with_finite_losses_that_differ_from_fp32(data, tmp_path):
    recs = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(0)
        t = Trainer(tiny_cfg(epochs=1, warmup_epochs=0, precision=p), data[0], tmp_path/p, progress=False)
        recs[p] = t.train_epoch()
    assert all(math.isfinite(r["loss"]) for r in recs.values())
    assert recs["bf16"]["loss"] != recs["fp32"]["loss"]
    assert abs(recs["bf16"]["loss"] - recs["fp32"]["loss"]) < 0.1 * abs(recs["fp32"]["loss"])


@pytest.mark.parametrize("key,value,match", [("checkpoint_every", -1, "checkpoint_every"),
                                              ("precision", "fp16", "precision")])
def test_bad_checkpoint_and_precision_settings_are_clear_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny_cfg(**{key: value})
