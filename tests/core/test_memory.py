"""The fit's malloc settings (core/memory.py), measured by what they are for: page faults."""

import subprocess
import sys

import pytest

from neurflow.core.memory import FIT_MALLOC, _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc only (malloc_for_fit is a no-op elsewhere)")

# One process per setting (the thresholds are process-wide): a 16 MB and an 8 MB tensor allocated and
# freed 20 times, the minor page faults of the median round printed. The median, because glibc's heap
# takes a few rounds to settle under the fast setting (seen: 4096, 4096, 4096, 2048, then 0 in every
# round; up to seven rounds before it settles), and a fit is thousands of rounds long.
_PROBE = """
import resource, statistics, sys, torch
from neurflow.core.memory import malloc_for_fit
assert malloc_for_fit(sys.argv[1])
torch.ones(4 * 2**20)
rounds = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.ones(4 * 2**20), torch.ones(2 * 2**20)
    del a, b
    rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(rounds))
"""


def _faults_per_round(preset: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PROBE, preset], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def test_fast_fits_reuse_large_tensors_that_exact_fits_map_afresh():
    # 24 MB per round is 6,144 pages: at exact's 2 MB threshold both tensors are fresh mappings and
    # every page faults; at fast's 32 MB (with freed heap kept mapped) they are reused.
    exact, fast = _faults_per_round("exact"), _faults_per_round("fast")
    assert exact > 5000
    assert fast < exact / 4


def test_each_preset_has_its_setting_and_exact_keeps_the_low_peak_one():
    assert set(FIT_MALLOC) == {"exact", "fast"}
    assert FIT_MALLOC["exact"][0] < FIT_MALLOC["fast"][0] <= 32 * 2**20  # glibc's largest mmap threshold
