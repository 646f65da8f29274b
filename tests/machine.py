"""What the machine running the tests can measure, decided apart from the code under test, so
a test of one branch is skipped, and says so, where the other branch holds."""

from __future__ import annotations

import pytest
import torch

from greenai.energy import counters
from greenai.errors import EnergyError


def counters_here() -> bool:
    """Whether Zeus can read anything on this machine (a GPU host, or one with readable RAPL)."""
    try:
        return bool(counters.ZeusCounters(0 if torch.cuda.is_available() else None).components)
    except EnergyError:
        return False


COUNTERS_HERE = counters_here()
with_counters = pytest.mark.skipif(not COUNTERS_HERE, reason="Zeus reads no counter on this machine")
without_counters = pytest.mark.skipif(COUNTERS_HERE, reason="Zeus reads counters on this machine")
