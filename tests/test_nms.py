"""Soft-NMS backends (unimd.nms): each reproduces the official op's recorded outputs, and all agree on random inputs.

The Triton kernel runs under TRITON_INTERPRET=1 (set by conftest.py without a CUDA device) on small inputs only:
the interpreter runs one program after the other, a few ms per step."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SHARED, shared_path
from unimd import nms as N
from unimd.nms import BACKENDS, batched_nms, nms_groups

LOCAL = ROOT / "tests" / "fixtures" / "softnms"
HAS_TRITON = "triton" in BACKENDS and (N._interpreted() or torch.cuda.is_available())
ALL = ["reference", "cpu"] + (["compiled"] if "compiled" in BACKENDS else []) + (["triton"] if HAS_TRITON else [])
# under the interpreter the kernel is slow: fixture cases above these sizes are left to the GPU machines
INTERPRETED = HAS_TRITON and N._interpreted()
TRITON_MAX_N = dict(local=300 if INTERPRETED else 10**9, shared=100 if INTERPRETED else 10**9)
SOFT = {0: "hard", 1: "linear", 2: "gaussian"}


def _dev(backend):
    return "cuda" if backend == "triton" and not N._interpreted() else "cpu"


def _cases(folder):
    return json.loads((folder / "cases.json").read_text())["cases"]


def _tie_runs_match(a_segs, a_sc, a_lab, b_segs, b_sc, b_lab):
    "Outputs equal in order, except inside runs of exactly equal expected scores (the official final sort is unstable)."
    assert len(a_sc) == len(b_sc)
    np.testing.assert_allclose(a_sc, b_sc, rtol=1e-6, atol=0)
    i = 0
    while i < len(b_sc):
        j = i + 1
        while j < len(b_sc) and b_sc[j] == b_sc[i]: j += 1
        ka, kb = (np.lexsort((segs[i:j, 1], segs[i:j, 0], lab[i:j])) + i for segs, lab in ((a_segs, a_lab), (b_segs, b_lab)))
        assert a_lab[ka].tolist() == b_lab[kb].tolist(), f"labels of rows {i}..{j - 1} differ"
        # voting averages many segments: its float32 sums may differ in the last bits
        np.testing.assert_allclose(a_segs[ka], b_segs[kb], rtol=1e-5, atol=1e-4, equal_nan=True, err_msg=f"rows {i}..{j - 1}")
        i = j


def check_case(folder, case, backend):
    z = np.load(folder / case["file"])
    p = case["params"]
    dev = _dev(backend)
    segs, scores = torch.from_numpy(z["in_segs"]).to(dev), torch.from_numpy(z["in_scores"]).to(dev)
    one = torch.zeros(len(scores), dtype=torch.long, device=dev)
    if case["api"] == "softnms_op":
        keep, sc = nms_groups(segs, scores, one, SOFT[p["method"]], p["iou_threshold"], p["sigma"], p["min_score"], -1, backend)
        assert keep.cpu().tolist() == z["out_inds"].tolist()
        np.testing.assert_allclose(sc.cpu().numpy(), z["out_dets"][:, 2], rtol=1e-6, atol=0)
        np.testing.assert_array_equal(z["in_segs"][keep.cpu().numpy()], z["out_dets"][:, :2])
    elif case["api"] == "nms_op":
        keep, sc = nms_groups(segs, scores, one, "nms", p["iou_threshold"], backend=backend)
        assert keep.cpu().tolist() == z["out_inds"].tolist()
        np.testing.assert_array_equal(sc.cpu().numpy(), z["in_scores"][z["out_inds"]])
    else:
        s, sc, lab = batched_nms(segs, scores, torch.from_numpy(z["in_labels"]).to(dev), p["iou_threshold"],
                                 p["min_score"], p["max_seg_num"], p["use_soft_nms"], p["multiclass"], p["sigma"],
                                 p["voting_thresh"], backend=backend)
        _tie_runs_match(s.cpu().numpy(), sc.cpu().numpy(), lab.cpu().numpy(), z["out_segs"], z["out_scores"], z["out_labels"])


def _runnable(case, backend, where):
    return backend != "triton" or case["n"] <= TRITON_MAX_N[where]


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("case", _cases(LOCAL), ids=lambda c: c["name"])
def test_local_fixture(case, backend):
    if not _runnable(case, backend, "local"): pytest.skip(f"n={case['n']}: too slow for the Triton interpreter")
    check_case(LOCAL, case, backend)


@pytest.mark.parametrize("backend", ALL)
def test_every_shared_fixture(backend):
    folder = shared_path("fixtures", "softnms")
    cases = [c for c in _cases(folder) if _runnable(c, backend, "shared")]
    assert len(cases) >= (63 if backend != "triton" else 10)
    for case in cases:
        try: check_case(folder, case, backend)
        except AssertionError as e: raise AssertionError(f"{case['name']}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# all backends agree: random groups with ties, zero-length, identical and nested segments, sparse group ids

@st.composite
def batches(draw, max_groups=6, max_size=40):
    sizes = draw(st.lists(st.integers(0, max_size), min_size=1, max_size=max_groups))
    ids = draw(st.lists(st.integers(0, 10**6), min_size=len(sizes), max_size=len(sizes), unique=True))
    n = sum(sizes)
    grid = draw(st.sampled_from([1.0, 0.5, None]))          # coarse grids make identical and nested segments
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 30, n)
    length = rng.exponential(4, n) * (rng.random(n) > 0.15)  # some zero-length
    if grid: start, length = np.round(start / grid) * grid, np.round(length / grid) * grid
    tie_levels = draw(st.sampled_from([0, 3, 8]))
    scores = rng.integers(1, tie_levels + 1, n) / tie_levels if tie_levels else rng.uniform(1e-4, 1, n)
    group = np.repeat(ids, sizes)
    perm = rng.permutation(n)
    segs = np.stack([start, start + length], 1).astype(np.float32)[perm]
    return torch.from_numpy(segs), torch.from_numpy(scores.astype(np.float32)[perm]), torch.from_numpy(group[perm])


params = st.fixed_dictionaries(dict(
    method=st.sampled_from(["gaussian", "linear", "hard", "nms"]),
    iou_threshold=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0]),
    sigma=st.floats(0.05, 2.0),
    min_score=st.sampled_from([0.0, 0.001, 0.05, 0.3]),
    max_per_group=st.sampled_from([-1, 1, 3, 50]),
))


def assert_same(a, b):
    assert a[0].cpu().tolist() == b[0].cpu().tolist()
    np.testing.assert_allclose(b[1].cpu().numpy(), a[1].cpu().numpy(), rtol=1e-6, atol=0)


def run(backend, x, p):
    segs, scores, group = (t.to(_dev(backend)) for t in x)
    return nms_groups(segs, scores, group, backend=backend, **p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=batches(), p=params)
def test_cpu_agrees_with_reference(x, p):
    ref = run("reference", x, p)
    out = run("cpu", x, p)
    assert_same(ref, out)
    assert torch.equal(ref[1], out[1])                    # bit-identical, in fact


@pytest.mark.parametrize("sizes", [[5000], [1, 2, 3, 4, 5, 5000, 700, 64, 65, 1000]])
@pytest.mark.parametrize("method,sigma,min_score", [("gaussian", 0.9, 0.001), ("linear", 0.5, 0.001), ("hard", 0.5, 0.0)])
def test_cpu_large_groups(sizes, method, sigma, min_score):
    rng = np.random.default_rng(len(sizes))
    n = sum(sizes)
    start = rng.uniform(0, 1000, n).astype(np.float32)
    segs = torch.from_numpy(np.stack([start, start + rng.exponential(20, n).astype(np.float32)], 1))
    scores = torch.from_numpy(rng.uniform(0, 1, n).astype(np.float32) ** 3)
    group = torch.from_numpy(rng.permutation(np.repeat(np.arange(len(sizes)), sizes)))
    p = dict(method=method, iou_threshold=0.5, sigma=sigma, min_score=min_score, max_per_group=2000)
    assert_same(run("reference", (segs, scores, group), p), run("cpu", (segs, scores, group), p))


@pytest.mark.skipif(not HAS_TRITON, reason="no Triton, or neither a GPU nor TRITON_INTERPRET=1")
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=batches(max_groups=3, max_size=12), p=params)
def test_triton_agrees_with_reference(x, p):
    assert_same(run("reference", x, p), run("triton", x, p))


@pytest.mark.skipif(not HAS_TRITON, reason="no Triton, or neither a GPU nor TRITON_INTERPRET=1")
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_triton_several_chunks_per_group(method):
    # block=16 < group sizes: the max, the rescoring and the removal all run over several chunks
    rng = np.random.default_rng(3)
    sizes = [40, 1, 17]
    n = sum(sizes)
    start = np.round(rng.uniform(0, 20, n)).astype(np.float32)
    segs = torch.from_numpy(np.stack([start, start + np.round(rng.exponential(3, n)).astype(np.float32)], 1))
    scores = torch.from_numpy((rng.integers(1, 6, n) / 5).astype(np.float32))
    group = torch.from_numpy(rng.permutation(np.repeat(np.arange(3), sizes)))
    ref = nms_groups(segs, scores, group, method, 0.3, 0.5, 0.05, 25, "reference")
    dev = _dev("triton")
    out = N._triton_groups(segs.to(dev), scores.to(dev), group.to(dev), method, 0.3, 0.5, 0.05, 25, block=16)
    assert_same(ref, out)


# ---------------------------------------------------------------------------------------------------------------
# API: empty input, auto backend, errors

@pytest.mark.parametrize("backend", ALL)
def test_empty_and_single(backend):
    dev = _dev(backend)
    keep, sc = nms_groups(torch.zeros(0, 2, device=dev), torch.zeros(0, device=dev), torch.zeros(0, dtype=torch.long, device=dev), backend=backend)
    assert len(keep) == 0 and len(sc) == 0
    keep, sc = nms_groups(torch.tensor([[1.0, 2.0]], device=dev), torch.tensor([0.0005], device=dev), torch.tensor([7], device=dev), backend=backend)
    assert keep.cpu().tolist() == [0] and np.isclose(float(sc[0]), 0.0005)   # the first pick is never removed


def test_auto_picks_cpu_for_cpu_tensors():
    assert not N._usable("triton", torch.zeros(1, 2))
    x = (torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0]))
    assert_same(nms_groups(*x, backend="auto"), nms_groups(*x, backend="cpu"))


def test_numba_is_installed_so_auto_takes_the_compiled_backend_on_cpu():
    # numba is a dependency: CI must exercise the backend that evaluation uses
    assert "compiled" in BACKENDS
    r = _python("import sys; sys.modules['numba'] = None\n"
                "import torch; from unimd.nms import BACKENDS, nms_groups\n"
                "assert 'compiled' not in BACKENDS\n"
                "print(nms_groups(torch.tensor([[0., 1.], [0., 1.]]), torch.tensor([1., .5]), torch.tensor([0, 0]))[0].tolist())")
    assert r.returncode == 0 and r.stdout.strip() == "[0, 1]", r.stderr


def test_compiled_one_pass_keeps_the_first_maximum_after_removals():
    # ties whose order the removal (last slot moved into the removed one) decides: the fused argmax must see the
    # final order. Many identical candidates, some dropping below min_score at each step.
    if "compiled" not in BACKENDS: pytest.skip("numba not installed")
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(2, 300))
        st = rng.integers(0, 20, n).astype(np.float32)
        segs = torch.from_numpy(np.stack([st, st + rng.integers(0, 6, n).astype(np.float32)], 1))
        scores = torch.from_numpy((rng.integers(1, 6, n) / 5).astype(np.float32))
        group = torch.from_numpy(rng.integers(0, 3, n))
        for method, thr in (("gaussian", 0.1), ("linear", 0.2), ("hard", 0.4), ("hard", 0.0)):
            p = dict(method=method, iou_threshold=thr, sigma=0.3, min_score=0.35, max_per_group=int(rng.integers(-1, 40)))
            a = nms_groups(segs, scores, group, backend="reference", **p)
            b = nms_groups(segs, scores, group, backend="compiled", **p)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), (trial, method)   # bit for bit


@pytest.mark.parametrize("bad,match", [
    (dict(scores=torch.tensor([0.5])), "must have N rows"),
    (dict(group=torch.tensor([0, 1, 2])), "must have N rows"),
    (dict(segs=torch.zeros(2, 3)), r"segs must be \(N, 2\)"),
    (dict(scores=torch.tensor([0.5, float("nan")])), "NaN"),
    (dict(scores=torch.tensor([0.5, float("inf")])), "infinite"),
    (dict(segs=torch.tensor([[0.0, 1.0], [3.0, 2.0]])), "end before they start"),
    (dict(segs=torch.tensor([[0.0, 1.0], [float("nan"), 2.0]])), "NaN or infinite"),
    (dict(sigma=0.0), "sigma must be > 0"),
    (dict(sigma=-1.0), "sigma must be > 0"),
    (dict(method="soft"), "method must be one of"),
    (dict(backend="cuda"), "unknown NMS backend"),
])
def test_bad_input_raises(bad, match):
    kw = dict(segs=torch.tensor([[0.0, 1.0], [0.5, 2.0]]), scores=torch.tensor([0.9, 0.5]), group=torch.tensor([0, 0]),
              method="gaussian", sigma=0.5, backend="cpu")
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        nms_groups(**kw)


def _python(code, **env):
    e = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=ROOT)


def test_import_without_triton_and_without_interpreter():
    # triton missing: the module imports, has no triton backend, and works on CPU
    r = _python("import sys; sys.modules['triton'] = None\n"
                "import torch; from unimd.nms import BACKENDS, nms_groups\n"
                "assert 'triton' not in BACKENDS\n"
                "print(nms_groups(torch.tensor([[0., 1.]]), torch.tensor([1.]), torch.tensor([0]))[0].tolist())")
    assert r.returncode == 0 and r.stdout.strip() == "[0]", r.stderr
    # triton present, no interpreter: CPU tensors get a clear error (no GPU here) or run (GPU machine, CUDA tensors only)
    r = _python("import torch; from unimd.nms import nms_groups\n"
                "try: nms_groups(torch.tensor([[0., 1.]]), torch.tensor([1.]), torch.tensor([0]), backend='triton')\n"
                "except (RuntimeError, ValueError) as e: print(e)")
    assert r.returncode == 0, r.stderr
    assert "TRITON_INTERPRET=1" in r.stdout or "unknown NMS backend" in r.stdout
