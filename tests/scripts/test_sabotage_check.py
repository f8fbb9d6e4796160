"""scripts/sabotage_check.py: every sabotage still applies to the source (exactly one match),
and the machinery reports a caught one (a fast one, run for real in a copy of the tree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, "scripts/sabotage_check.py"]


@pytest.mark.timeout(60)
def test_every_sabotage_applies_to_the_source():
    done = subprocess.run([*SCRIPT, "--list"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("  tests: ") == 8


@pytest.mark.timeout(240)
def test_a_sabotaged_fast_path_is_caught_and_the_checkout_is_untouched():
    protocol = ROOT / "processes" / "shared" / "protocol.py"
    before = protocol.read_bytes()
    done = subprocess.run([*SCRIPT, "--only", "order-fast-path-off"], cwd=ROOT,
                          capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| `order-fast-path-off` | orders take the typed fast path | caught |" in done.stdout
    assert protocol.read_bytes() == before


@pytest.mark.timeout(60)
def test_an_unknown_sabotage_is_refused():
    done = subprocess.run([*SCRIPT, "--only", "no-such"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "no sabotage named no-such" in done.stderr
