"""A real ComfyUI for the host tests: one server process on loopback, its time budget, and ComfyUI's python.

Used by `test_comfyui_host.py` (the ZeroScope workflows) and `test_comfyui_host_wan.py` (the Wan ones). Both are
skipped unless COMFYUI_DIR points at a ComfyUI checkout (tests/comfyui_host_setup.sh builds one); COMFYUI_PYTHON
is the python that runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)

needs_comfyui = pytest.mark.skipif(
    not COMFYUI_DIR or not (Path(COMFYUI_DIR) / "main.py").is_file(),
    reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its python); see tests/comfyui_host_setup.sh",
)


class Budget:
    """Seconds a whole test module may take, server start included: a hang fails the module, it never stalls CI."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what, self.started = seconds, what, 0.0

    def start(self) -> None:
        self.started = time.monotonic()

    def left(self, wanted: float) -> float:
        """`wanted` seconds, or what is left of the budget if less; fails the test once it is spent."""
        self.started = self.started or time.monotonic()  # a test without the server starts the clock itself
        left = self.seconds - (time.monotonic() - self.started)
        if left <= 0:
            pytest.fail(f"{self.what} is over its {self.seconds}s budget")
        return min(wanted, left)


class Server:
    """A ComfyUI process on a free loopback port with its own base directory."""

    def __init__(self, base: Path, budget: Budget, start_timeout: float = 120, prompt_timeout: float = 240):
        self.base, self.budget = base, budget
        self.start_timeout, self.prompt_timeout = start_timeout, prompt_timeout
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base),
               "--database-url", "sqlite:///:memory:"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # one thread, as the other tests
        env.pop("MOTION_DIRECTOR_MODELS", None)  # inside ComfyUI the pack must use ComfyUI's model folders
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.budget.left(self.start_timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/object_info", timeout=30)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer /object_info within {self.start_timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, chars: int | None = 6000) -> str:
        """The end of the server's log (`chars=None`: all of it)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text if chars is None else text[-chars:]

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def post(self, path: str, body: dict | None = None, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = r.read()
                return json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')[:4000]}") from None

    def queue(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float | None = None) -> dict:
        """The prompt's /history entry once it has finished (successfully or not)."""
        timeout = self.budget.left(self.prompt_timeout if timeout is None else timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None \
                    and (entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                return entry
            if self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        self.post("/interrupt")
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float | None = None) -> dict:
        entry = self.wait(self.queue(prompt), timeout)
        assert entry["status"].get("status_str") == "success", \
            f"prompt failed: {describe_error(entry)}\n--- server log ---\n{self.log_tail()}"
        return entry


def describe_error(entry: dict) -> str:
    for kind, msg in entry.get("status", {}).get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            return (f"{kind} in node {msg.get('node_id')} ({msg.get('node_type')}): "
                    f"{msg.get('exception_type', '')}: {msg.get('exception_message', '')}\n"
                    + "".join(msg.get("traceback") or []))
    return json.dumps(entry.get("status"), indent=1)[:4000]


def run_in_comfy_python(code: str, payload) -> object:
    """Run `code` in ComfyUI's python (it has comfy-cli, av, Pillow): JSON in on stdin, JSON out on stdout."""
    proc = subprocess.run([COMFYUI_PYTHON, "-c", code], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"helper failed in {COMFYUI_PYTHON}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


PROBE = r"""
import json, sys
import av
out = []
for path in json.load(sys.stdin):
    with av.open(path) as box:
        frames = [f for f in box.decode(video=0)]
        out.append([len(frames), frames[0].width, frames[0].height])
print(json.dumps(out))
"""  # [frames, width, height] of each video file

CONVERT = r"""
import json, sys
from comfy_cli.workflow_to_api import convert_ui_to_api
args = json.load(sys.stdin)
print(json.dumps(convert_ui_to_api(args["workflow"], args["object_info"])))
"""  # a UI-format workflow -> API format, as the frontend would send it
