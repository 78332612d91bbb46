"""What a new user meets first: the command line (help without torch, every option explained, --version, threads,
Triton in `info`, `eval --out`), log-friendly progress, CLIP weights by download, and `data check` without data."""
import io
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from unimd.cli import build_parser, main

PY = [sys.executable, "-c"]
COMMANDS = [[], ["info"], ["demo"], ["train"], ["eval"], ["docs"], ["data", "check"], ["predict"], ["features"], ["tables"]]


def run(code, env=None):
    return subprocess.run(PY + [code], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **(env or {})))


def test_help_of_every_command_imports_no_torch():
    for cmd in COMMANDS:
        code = ("import sys\nfrom unimd.cli import main\ntry: main(%r)\nexcept SystemExit: pass\n"
                "print('heavy:', sorted({'torch', 'pandas', 'open_clip'} & set(sys.modules)))") % (cmd + ["--help"])
        r = run(code)
        assert r.returncode == 0 and "usage: unimd" in r.stdout and "heavy: []" in r.stdout, (cmd, r.stdout[-300:], r.stderr[-500:])


def test_every_option_has_help_and_version(capsys):
    def missing(p, where):
        out = []
        for a in p._actions:
            if hasattr(a, "choices") and isinstance(a.choices, dict):
                for name, sp in a.choices.items(): out += missing(sp, f"{where} {name}")
            elif a.option_strings and not a.help: out.append(f"{where} {a.option_strings[-1]}")
        return out
    assert missing(build_parser(), "unimd") == []
    with pytest.raises(SystemExit) as e: main(["--version"])
    from unimd import __version__
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"unimd {__version__}"
    eval_out = [a for a in build_parser()._subparsers._group_actions[0].choices["eval"]._actions if "--out" in a.option_strings][0]
    assert eval_out.metavar == "FILE.json" and "JSON file" in eval_out.help


def test_threads_are_chosen_capped_and_printed():
    from unimd.compat import available_cores
    n = available_cores()
    code = "from unimd.cli import main; raise SystemExit(main(['eval', '--ckpt', 'missing.pt']))"
    r = run(code, {"UNIMD_THREADS": "64"})
    # the choice is said on stdout; stderr keeps the error as its one line
    assert r.stdout.splitlines()[0] == f"unimd: {n} CPU thread{'s' if n > 1 else ''} (UNIMD_THREADS=64, capped to the {n} available cores)"
    assert r.stderr.splitlines() == ["unimd: missing.pt: checkpoint not found"]
    r = run(code.replace("'missing.pt'", "'missing.pt', '--threads', '1'"))
    assert r.stdout.splitlines()[0] == "unimd: 1 CPU thread (--threads=1)"
    r = run(code, {"UNIMD_THREADS": "many"})
    assert r.returncode == 2 and "UNIMD_THREADS='many': expected a whole number" in r.stderr


def test_info_reports_an_installed_triton(capsys):
    pytest.importorskip("triton")
    assert main(["info"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("triton")][0]
    assert "installed" in line and "not installed" not in line and "unavailable" not in line


def test_progress_in_a_log_prints_every_tenth_and_every_30_s():
    from unimd.train import progress_bar
    buf = io.StringIO()                     # not a terminal
    for _ in progress_bar(range(50), desc="epoch 1/3 (2 + 1 warm-up)", file=buf): pass
    lines = buf.getvalue().splitlines()
    assert len(lines) == 11 and lines[0].startswith("epoch 1/3 (2 + 1 warm-up):   0%") and "50/50" in lines[-1]
    assert "\r" not in buf.getvalue()
    buf = io.StringIO()
    bar = progress_bar(None, total=1000, desc="slow", file=buf)
    now = [bar.start_t]
    bar._time = lambda: now[0]
    bar.update(1); now[0] += 10; bar.update(1)     # 0.2 % and 10 s: nothing new
    assert len(buf.getvalue().splitlines()) == 1
    now[0] += 21; bar.update(1)                    # 31 s since the last line
    assert len(buf.getvalue().splitlines()) == 2 and "3/1000" in buf.getvalue().splitlines()[-1]
    bar.close()


def test_openai_weights_without_network_fail_at_once(monkeypatch, tmp_path, capsys):
    import unimd.text as text
    monkeypatch.setattr(text, "_reachable", lambda host, port, timeout=5.0: False)
    with pytest.raises(text.MissingClipWeights) as e: text.resolve_clip_weights("openai", "ViT-B-32")
    assert "cannot be reached" in str(e.value) and "huggingface.co" in str(e.value) and "clip_weights" in str(e.value)
    (tmp_path/"v").mkdir()
    from unimd.video import write_test_video
    write_test_video(tmp_path/"v"/"a.mp4", seconds=0.5)
    assert main(["features", "--videos", str(tmp_path/"v"), "--out", str(tmp_path/"f"), "--clip-weights", "openai"]) == 2
    assert "cannot be reached" in capsys.readouterr().err


def test_data_check_counts_files_before_the_annotations_exist(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "charades", "--set", f"general.data_root={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert "16524 file(s) missing (16520 of them counted from the dataset's published size" in out
    assert "not listable until they are present" in out
    assert main(["data", "check", "--dataset", "workout_stitch", "--set", f"workout_stitch.clips={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert "506 file(s) missing (505 of them" in out and "unknown dataset" not in out
    assert main(["data", "check", "--dataset", "nosuchset"]) == 2
    assert "workout_stitch" in capsys.readouterr().err
