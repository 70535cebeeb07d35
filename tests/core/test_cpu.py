"""core/cpu.py: idle cores from /proc/stat, and the load-average fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from neurflow.core import cpu


def test_every_core_busy_reports_none_idle():
    cores = os.cpu_count() or 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        assert cpu.idle_cores(1.0) == 0
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def test_the_count_stays_within_the_machine():
    assert 0 <= cpu.idle_cores(0.2) <= (os.cpu_count() or 1)


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    monkeypatch.setattr(cpu, "PROC_STAT", Path("/nonexistent/stat"))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert cpu.idle_cores() == 2  # 2.5 idle: two whole cores
    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 0.0, 0.0))
    assert cpu.idle_cores() == 0
