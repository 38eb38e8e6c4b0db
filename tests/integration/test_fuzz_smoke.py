"""A bounded run of the control-plane fuzzer (tests/fuzz/fuzz_control.py, `make fuzz`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO, next_port_range

pytestmark = pytest.mark.timeout(180)

FUZZ = REPO / "tests" / "fuzz" / "fuzz_control.py"


def test_twenty_thousand_control_inputs_all_answered_without_crash_or_leak():
    low, high = next_port_range()
    run = subprocess.run(
        [sys.executable, str(FUZZ), "--count", "20000", "--ports", f"{low}-{high}", "--quiet"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fuzz_control: OK" in run.stdout
