"JupyterLab starts headless from the venv and executes a notebook through its server with the project's kernel."
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _api(base, token, path, data=None, method=None):
    req = urllib.request.Request(f"{base}{path}", method=method or ("POST" if data is not None else "GET"),
                                 data=None if data is None else json.dumps(data).encode(),
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
        return json.loads(body) if body else None


def _execute(ws, code):
    "Send one execute_request over the kernel channels websocket; return (status, stdout)."
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                                   "msg_type": "execute_request", "version": "5.3"},
                        "parent_header": {}, "metadata": {}, "channel": "shell",
                        "content": {"code": code, "silent": False, "store_history": False,
                                    "user_expressions": {}, "allow_stdin": False}}))
    out, status = [], None
    deadline = time.time() + 120
    while time.time() < deadline and status is None:
        m = json.loads(ws.recv())
        if m.get("parent_header", {}).get("msg_id") != msg_id: continue
        if m["msg_type"] == "stream": out.append(m["content"]["text"])
        if m["msg_type"] == "error": out.append("\n".join(m["content"]["traceback"]))
        if m["msg_type"] == "execute_reply": status = m["content"]["status"]
    return status, "".join(out)


def test_jupyterlab_executes_a_notebook(tmp_path):
    websocket = pytest.importorskip("websocket")
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "import unimd, torch\nx = torch.arange(4).sum().item()",
                     "outputs": [], "execution_count": None},
                    {"cell_type": "code", "metadata": {}, "source": "print('unimd', unimd.__version__, x)",
                     "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path/"probe.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), uuid.uuid4().hex
    jupyter = Path(sys.executable).parent/"jupyter"
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}", "--allow-root",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try: _api(base, token, "/api/status"); break
            except Exception: time.sleep(0.5)
        else: pytest.fail("jupyter lab did not start")
        specs = _api(base, token, "/api/kernelspecs")["kernelspecs"]
        kernel = "unimd" if "unimd" in specs else "python3"
        sess = _api(base, token, "/api/sessions", {"path": "probe.ipynb", "type": "notebook", "name": "probe.ipynb",
                                                    "kernel": {"name": kernel}})
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{sess['kernel']['id']}/channels?token={token}",
                                         timeout=120)
        try:
            outs = [_execute(ws, c["source"]) for c in nb["cells"]]
        finally:
            ws.close()
        assert [s for s, _ in outs] == ["ok", "ok"], outs
        import unimd
        assert outs[1][1].strip() == f"unimd {unimd.__version__} 6"
        _api(base, token, f"/api/sessions/{sess['id']}", method="DELETE")
    finally:
        proc.terminate()  # stop the server by its PID
        try: proc.wait(timeout=30)
        except subprocess.TimeoutExpired: proc.kill()
    assert proc.returncode is not None
