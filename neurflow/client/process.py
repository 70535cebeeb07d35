"""Starting a server as a child process: a free loopback port, and waiting until ``/health`` answers.

Shared by the demo, the load test and the tests (ours and the Label Studio integration test), which
all start ``neurflow serve`` (or Label Studio) in a subprocess and must not talk to it too early.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx


class NotReady(RuntimeError):
    """The server exited, or did not answer ``/health`` with 200 in time; the message says which."""


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, interval: float = 0.25) -> float:
    """Poll ``url + "/health"`` until it answers 200; return the seconds waited. Raise
    :class:`NotReady` as soon as ``proc`` exits, or after ``timeout`` seconds."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise NotReady(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout:
            raise NotReady(f"the server did not answer {url}/health within {timeout:.0f} s")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, grace: float = 30.0, group: bool = False) -> None:
    """SIGTERM (to the process group with ``group``), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    term = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    term(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        term(signal.SIGKILL)
        proc.wait(10)
