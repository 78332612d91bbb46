"benchmarks/device_check.sh --dry-run: the GPU check runs end to end on CPU (tiny inputs, Triton interpreter)."
import json
import os
import subprocess

import pytest

from conftest import ROOT
from unimd.compat import import_triton


@pytest.mark.skipif(import_triton() is None, reason="Triton is not installed")
def test_device_check_dry_run_writes_its_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "OUT")}   # the script sets it itself
    r = subprocess.run(["bash", str(ROOT/"benchmarks"/"device_check.sh"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((tmp_path/"device_check.json").read_text())
    assert res["dry_run"] is True and res["softnms_fixtures_all_exact"] is True
    assert len(res["softnms_fixtures"]) >= 5 and all(c["official_inds"] for c in res["softnms_fixtures"])
    assert [w["workload"] for w in res["softnms"]] == ["ego4d-mq", "charades-sta"]
    assert all(w["triton_equals_cpu"] and w["triton"]["runs"] == 2 and w["triton"]["median_s"] > 0 for w in res["softnms"])
    m = res["model"]["tiny"]
    assert m["ours_train_iter"]["median_s"] > 0 and m["ours_inference_per_video"]["median_s"] > 0


def test_device_check_refuses_to_run_without_a_gpu_or_the_dry_run_flag(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(["bash", str(ROOT/"benchmarks"/"device_check.sh"), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    import torch
    if torch.cuda.is_available(): pytest.skip("a GPU is present: the real check would run")
    assert r.returncode != 0 and "--dry-run" in r.stderr and not (tmp_path/"device_check.json").exists()
