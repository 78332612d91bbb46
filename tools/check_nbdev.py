#!/usr/bin/env python
"""Fail unless unimd/ is exactly what nbs/ exports, every notebook is clean and README.md is current.

Runs nbdev-export, nbdev-clean and the README build on a temporary copy of the project and compares the
copy with the working tree, so the working tree itself is never modified.
Usage: python tools/check_nbdev.py [PROJECT_ROOT]
"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def tree(root: Path) -> dict:
    "Relative path -> bytes of the files the check covers."
    out = {}
    for sub, pat in (("unimd", "**/*.py"), ("nbs", "**/*.ipynb"), ("nbs", "llms.txt")):
        for f in (root/sub).glob(pat):
            if "__pycache__" in f.parts or ".ipynb_checkpoints" in f.parts: continue
            out[str(f.relative_to(root))] = f.read_bytes()
    readme = root/"README.md"
    if readme.exists(): out["README.md"] = readme.read_bytes()
    return out


def source_notebook(py: bytes) -> str:
    m = re.search(rb"File to edit: \.\./nbs/(\S+\.ipynb)", py)
    return m.group(1).decode() if m else "?"


def main(root: Path) -> int:
    root = root.resolve()
    before = tree(root)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            if (root/name).exists(): shutil.copy2(root/name, tmp/name)
        for name in ("nbs", "unimd"):
            shutil.copytree(root/name, tmp/name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        for cmd in (["nbdev-export"], ["nbdev-clean"]):
            r = subprocess.run([str(BIN/cmd[0])], cwd=tmp, capture_output=True, text=True)
            if r.returncode: print(r.stdout + r.stderr); return f"{cmd[0]} failed"
        r = subprocess.run([sys.executable, "-c", "import sys; from unimd.docsite import build_readme; build_readme(sys.argv[1])",
                            str(tmp)], cwd=tmp, capture_output=True, text=True)
        if r.returncode: print(r.stdout + r.stderr); return "README build failed"
        after = tree(tmp)
    for rel in sorted(set(before) | set(after)):
        a, b = before.get(rel), after.get(rel)
        if a == b: continue
        if rel.startswith("unimd/"):
            if a is None: problems.append(f"{rel} is exported by the notebooks but missing: run nbdev-export")
            elif b is None: problems.append(f"{rel} is not exported by any notebook: edit the notebook, then nbdev-export")
            else: problems.append(f"{rel} differs from what nbs/{source_notebook(b)} exports: "
                                  "edit the notebook, then nbdev-export")
        elif rel.endswith(".ipynb"): problems.append(f"{rel} is not clean: run nbdev-clean")
        elif rel == "README.md": problems.append("README.md is not what nbs/index.ipynb generates: run `unimd docs --readme-only`")
        else: problems.append(f"{rel} differs after nbdev-export: run nbdev-export")
    # modules whose notebook was deleted are never rewritten by the export: catch them too
    for rel, content in before.items():
        if rel.startswith("unimd/") and not rel.endswith(("__init__.py", "_modidx.py")):
            nb = source_notebook(content)
            if nb == "?" or not (root/"nbs"/nb).exists():
                problems.append(f"{rel} has no source notebook (nbs/{nb}): edit the notebook, then nbdev-export")
    if problems:
        print("nbdev check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"nbdev check ok: {sum(r.startswith('unimd/') for r in before)} modules match the notebooks, "
          f"{sum(r.endswith('.ipynb') for r in before)} notebooks clean, README current")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))
