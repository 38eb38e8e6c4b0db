"""A bounded run of the session soak (tests/soak/soak.py, `make soak`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.timeout(60)

SOAK = REPO / "tests" / "soak" / "soak.py"


@pytest.mark.parametrize("ctrl", ["udp", "cunix"])
def test_two_thousand_call_cycles_leave_no_leak(ctrl):
    run = subprocess.run(
        [sys.executable, str(SOAK), "--cycles", "2000", "--ctrl", ctrl, "--settle", "2", "--quiet"],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "soak: OK" in run.stdout
    assert "  objects: " in run.stdout  # the deterministic leak check ran
