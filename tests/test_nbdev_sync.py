"The test command's first step: a hand edit of unimd/*.py or an unclean notebook fails with an actionable message."
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.fixture
def project(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT/name, tmp_path/name)
    for name in ("nbs", "unimd"):
        shutil.copytree(ROOT/name, tmp_path/name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return tmp_path


def check(root):
    return subprocess.run([sys.executable, str(ROOT/"tools"/"check_nbdev.py"), str(root)],
                          capture_output=True, text=True, timeout=300)


def test_clean_project_passes(project):
    r = check(project)
    assert r.returncode == 0, r.stderr


def test_hand_edited_module_fails_naming_file_and_fix(project):
    with open(project/"unimd"/"settings.py", "a") as f: f.write("\n# a hand edit\n")
    r = check(project)
    assert r.returncode == 1
    assert "unimd/settings.py differs from what nbs/00_settings.ipynb exports" in r.stderr
    assert "edit the notebook, then nbdev-export" in r.stderr


def test_notebook_with_outputs_fails(project):
    nb = json.loads((project/"nbs"/"00_settings.ipynb").read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["execution_count"] = 7
    (project/"nbs"/"00_settings.ipynb").write_text(json.dumps(nb, indent=1))
    r = check(project)
    assert r.returncode == 1 and "nbs/00_settings.ipynb is not clean" in r.stderr


def test_stray_module_without_notebook_fails(project):
    (project/"unimd"/"orphan.py").write_text("x = 1\n")
    r = check(project)
    assert r.returncode == 1 and "unimd/orphan.py has no source notebook" in r.stderr
