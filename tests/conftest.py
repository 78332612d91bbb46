"Shared test helpers: project paths and the optional ../shared folder (golden fixtures and real annotations)."
import os
from pathlib import Path

import pytest
import torch

# unimd.nms defines its Triton kernel at import, reading TRITON_INTERPRET then: without a CUDA device the kernel
# can only run in Triton's interpreter, so set it before any test module imports unimd
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
# ../shared sits beside the checkout on the development and CI machines; elsewhere tests that need it skip
SHARED = Path(os.environ.get("UNIMD_SHARED", ROOT.parent/"shared"))


def shared_path(*parts) -> Path:
    "A path under ../shared, or skip the test when it is absent (fresh clone elsewhere)."
    p = SHARED.joinpath(*parts)
    if not p.exists(): pytest.skip(f"{p} not available (needs the ../shared folder beside the checkout)")
    return p


os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def one_torch_thread():
    "Run a module's tests on one torch thread: two threads spin-wait on a busy shared CPU and the CLIP-size towers are heavy."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
