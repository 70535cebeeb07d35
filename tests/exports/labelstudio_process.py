"""A real Label Studio (PyPI ``label-studio==1.23.2``) on loopback, started once per test session.

Installing it (its own virtual environment, ``.cache/labelstudio-venv``, about 1 GB) and its first
start (the database migrations) take about two minutes. ``tests/conftest.py`` therefore starts it in
a background thread as soon as pytest is configured, when the run will include the live Label Studio
test; the other tests run meanwhile. The process that starts it (the only one, or pytest-xdist's
controller) announces the folder where it writes ``ready.json`` (url, token, seconds) or ``error.txt``
in ``$NEURFLOW_TEST_LABELSTUDIO_DIR``, which xdist's workers inherit; the fixture waits for one of the
two files. Without that variable (a run that did not plan for it), the fixture starts one itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from neurflow.client.process import NotReady, free_loopback_port, stop_process, wait_healthy
from tests.collected import collected_paths
from tests.tool_venvs import install_steps

LABEL_STUDIO = "label-studio==1.23.2"
REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".cache" / "labelstudio-venv"
# Label Studio's own requirements are open-ended, so a fresh install drifts with PyPI; these pins
# are the versions it is known to start under.
CONSTRAINTS = Path(__file__).with_name("labelstudio-constraints.txt")
STAMP = VENV / "neurflow-constraints.sha256"
LIVE_TEST = REPO / "tests" / "exports" / "test_labelstudio_live.py"
ENV_DIR = "NEURFLOW_TEST_LABELSTUDIO_DIR"
SKIP_ENV = "NEURFLOW_SKIP_LABELSTUDIO"
INSTALL_TIMEOUT_S = 1800
START_TIMEOUT_S = 300


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be installed or started; the message says why (with its log's tail)."""


@dataclass
class LabelStudioServer:
    url: str
    token: str
    seconds_to_install: float
    seconds_to_start: float


def _tail(text: str | bytes, n: int = 3000) -> str:
    return (text.decode(errors="replace") if isinstance(text, bytes) else text)[-n:]


def _constraints_digest() -> str:
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()


def installed() -> bool:
    """True when the venv holds the wanted Label Studio, installed under the current constraints."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "label-studio").is_file() or not python.is_file():
        return False
    if not STAMP.is_file() or STAMP.read_text().strip() != _constraints_digest():
        return False
    wanted = LABEL_STUDIO.split("==")[1]
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
                           capture_output=True, text=True, timeout=120)
    return probe.returncode == 0 and probe.stdout.strip() == wanted


class Starter:
    """Installs (when missing) and starts Label Studio in ``folder``; ``run`` blocks, ``start`` runs it in
    a thread. Writes ``ready.json`` or ``error.txt`` into ``folder`` when done; ``stop`` ends it all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._procs: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="label-studio-starter", daemon=True)
        self._thread.start()

    def run(self) -> None:
        try:
            server = self._install_and_start()
        except Exception as exc:  # noqa: BLE001 - reported to the test that needs it, never lost
            (self.folder / "error.txt").write_text(f"{type(exc).__name__}: {exc}")
            return
        tmp = self.folder / "ready.json.tmp"
        tmp.write_text(json.dumps(server.__dict__))
        tmp.rename(self.folder / "ready.json")

    def _popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        if self._stopping.is_set():
            raise LabelStudioUnavailable("the test session ended before Label Studio was ready")
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def _install(self) -> float:
        if installed():
            return 0.0
        started = time.monotonic()
        base_python = getattr(sys, "_base_executable", None) or "python3"
        log_path = self.folder / "install.log"
        steps = install_steps(VENV, base_python, LABEL_STUDIO, CONSTRAINTS)
        for cmd in steps:
            with open(log_path, "ab") as log:
                proc = self._popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                try:
                    code = proc.wait(INSTALL_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    stop_process(proc, grace=5, group=True)
                    raise LabelStudioUnavailable(f"installing {LABEL_STUDIO} took over {INSTALL_TIMEOUT_S} s: {' '.join(cmd)}")
            if code != 0:
                raise LabelStudioUnavailable(f"cannot install {LABEL_STUDIO} ({' '.join(cmd)} exited {code}):\n"
                                             f"{_tail(log_path.read_bytes())}")
        STAMP.write_text(_constraints_digest())
        if not installed():
            raise LabelStudioUnavailable(f"{VENV} has no working {LABEL_STUDIO} after the install")
        return time.monotonic() - started

    def _install_and_start(self) -> LabelStudioServer:
        install_s = self._install()
        # hex, not token_urlsafe: a password starting with "-" reads as an option to label-studio's argparse
        port, token, password = free_loopback_port(), secrets.token_hex(20), secrets.token_hex(12)
        env = {**os.environ, "USE_DEFAULT_BANNED_SUBNETS": "false", "SSRF_PROTECTION_ENABLED": "false",
               "LABEL_STUDIO_BASE_DATA_DIR": str(self.folder), "PYTHONPATH": ""}
        log_path = self.folder / "label-studio.log"
        started = time.monotonic()
        with open(log_path, "wb") as log:
            proc = self._popen(
                [str(VENV / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
                 "--port", str(port), "--data-dir", str(self.folder / "ls"), "--username", "admin@example.com",
                 "--password", password, "--user-token", token, "--enable-legacy-api-token"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, START_TIMEOUT_S, interval=1.0)
        except NotReady as exc:
            raise LabelStudioUnavailable(f"label-studio: {exc}:\n{_tail(log_path.read_bytes())}") from None
        return LabelStudioServer(url=url, token=token, seconds_to_install=install_s,
                                 seconds_to_start=time.monotonic() - started)

    def stop(self) -> None:
        self._stopping.set()
        for proc in self._procs:
            stop_process(proc, grace=10, group=True)
        if self._thread is not None:
            self._thread.join(30)


def wait_for_server(folder: Path, timeout: float = INSTALL_TIMEOUT_S + START_TIMEOUT_S) -> LabelStudioServer:
    """The server announced in ``folder``, once ready; ``LabelStudioUnavailable`` with its reason otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "ready.json").is_file():
            return LabelStudioServer(**json.loads((folder / "ready.json").read_text()))
        if (folder / "error.txt").is_file():
            raise LabelStudioUnavailable((folder / "error.txt").read_text())
        time.sleep(0.5)
    raise LabelStudioUnavailable(f"Label Studio was not ready after {timeout:.0f} s (see {folder})")


# -- started early by tests/conftest.py ------------------------------------------------------------


def wanted(config) -> bool:
    """Whether this pytest run will include the live test: its file is under a path the run collects,
    and neither the environment nor a marker expression leaves it out."""
    if os.environ.get(SKIP_ENV) == "1" or "not integration" in (config.option.markexpr or ""):
        return False
    return any(LIVE_TEST == p or p in LIVE_TEST.parents for p in collected_paths(config))


class EarlyStart:
    """The session's one background start: its folder is announced in the environment."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="neurflow-label-studio-"))
        os.environ[ENV_DIR] = str(self.folder)
        self.starter = Starter(self.folder)
        self.starter.start()

    def close(self) -> None:
        self.starter.stop()
        os.environ.pop(ENV_DIR, None)
        shutil.rmtree(self.folder, ignore_errors=True)
