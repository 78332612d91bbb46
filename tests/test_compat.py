"Environment traps: open_clip imports and tokenizes offline; Triton never breaks an import on a GPU-less machine."
import subprocess
import sys

import pytest

from unimd import compat


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_open_clip_imports_and_tokenizes_in_a_fresh_process():
    r = _run("from unimd.compat import import_open_clip\n"
             "oc = import_open_clip()\n"
             "t = oc.get_tokenizer('ViT-B-32')(['a video of high jump', 'the person opens a door'])\n"
             "print(tuple(t.shape), int(t[0, 0]), int((t[0] > 0).sum()))")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["(2,", "77)", "49406", "7"]


def test_the_workaround_only_acts_on_the_torchvision_op_error(monkeypatch):
    def boom(name):
        raise RuntimeError("some other import failure")
    monkeypatch.setattr(compat.importlib, "import_module", boom)
    with pytest.raises(RuntimeError, match="some other import failure"):
        compat.import_open_clip()


def test_workaround_is_needed_on_this_machine_or_harmless():
    # plain `import open_clip` fails exactly as documented where the CUDA torchvision is installed; either way,
    # import_open_clip succeeds afterwards in the same process
    r = _run("import open_clip")
    assert r.returncode == 0 or "operator torchvision::nms does not exist" in r.stderr
    r = _run("import importlib\ntry:\n    import open_clip\nexcept RuntimeError:\n    pass\n"
             "from unimd.compat import import_open_clip\nprint(import_open_clip().__name__)")
    assert r.returncode == 0 and r.stdout.strip() == "open_clip", r.stderr[-2000:]


def test_triton_import_is_safe_without_gpu():
    r = _run("import os; os.environ.pop('TRITON_INTERPRET', None)\n"
             "from unimd.compat import import_triton, triton_status\n"
             "import torch\nassert not torch.cuda.is_available() or True\n"
             "print(import_triton() is not None, triton_status())")
    assert r.returncode == 0, r.stderr[-2000:]
    has, status = r.stdout.split()
    assert status in {"gpu", "unavailable"}
    assert compat.triton_status() in {"gpu", "interpreter", "unavailable"}
