"""A bounded run of the session soak (tests/soak/soak.py, `make soak`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.timeout(180)

SOAK = REPO / "tests" / "soak" / "soak.py"


def test_two_thousand_call_cycles_leave_no_leak():
    run = subprocess.run(
        [sys.executable, str(SOAK), "--cycles", "2000", "--quiet"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "soak: OK" in run.stdout
