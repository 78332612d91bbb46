"settings.ini through the CLI: overrides, and errors that name the key and the path."
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from unimd.settings import Settings, SettingsError, load_settings


def unimd(*args, env=None):
    return subprocess.run([sys.executable, "-c", "from unimd.cli import main; raise SystemExit(main())", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def test_every_key_is_documented_in_the_file():
    lines = (ROOT/"settings.ini").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[", " ")) and "=" in line:
            assert lines[i-1].startswith("#") or lines[i-1].startswith("[") or "=" in lines[i-1], f"undocumented: {line}"
    # the keys the dataset code reads exist for every paper dataset
    s = load_settings(ROOT/"settings.ini")
    for sec in ["ego4d", "charades", "anet", "thumos14", "qvhighlights", "tacos"]:
        assert any("features" in k for k in s.keys(sec)) and any("annotations" in k for k in s.keys(sec))


def test_relative_paths_resolve_against_the_settings_folder(tmp_path):
    (tmp_path/"settings.ini").write_text("[general]\n# doc\ndata_root = d\n[x]\n# doc\nf = ${general:data_root}/a.npy\n")
    (tmp_path/"d").mkdir(); (tmp_path/"d"/"a.npy").write_text("")
    s = Settings(tmp_path/"settings.ini", environ={})
    assert s.path_of("x", "f", kind="file") == tmp_path/"d"/"a.npy"
    with pytest.raises(SettingsError, match=r"\[x\] f = .*expected a directory"):
        s.path_of("x", "f", kind="dir")


def test_environment_and_cli_override_the_file():
    r = unimd("info", env={"UNIMD_GENERAL_DEVICE": "cpu"})
    assert r.returncode == 0 and "device     cpu" in r.stdout, r.stderr
    r = unimd("info", "--set", "general.device=cpu", env={"UNIMD_GENERAL_DEVICE": "cuda"})
    assert r.returncode == 0 and "device     cpu" in r.stdout


def test_unknown_key_is_a_clear_error_not_a_traceback():
    r = unimd("info", "--set", "general.devise=cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown setting [general] devise" in r.stderr and "device" in r.stderr


def test_missing_settings_file_is_reported(tmp_path):
    r = unimd("info", env={"UNIMD_SETTINGS": str(tmp_path/"nope.ini")})
    assert r.returncode == 2 and "nope.ini" in r.stderr
