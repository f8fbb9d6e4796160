"""A process that cannot start for the operator's reason says so in one line; a defect keeps
its traceback (processes/shared/errors.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_an_unreadable_price_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "none.csv"
    out = subprocess.run([sys.executable, "-m", "processes.gateway", "--csv", str(missing),
                          "--price-port", "0", "--news-port", "0",
                          "--set", f"logging.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert f"gateway failed: gateway.csv: cannot read {missing}" in text
    assert "Traceback" not in text
    log = (tmp_path / "gateway.log").read_text()
    assert "gateway failed: gateway.csv" in log and "Traceback" not in log


# A service whose start() has a bug, served in a child process: serve() pins, ranks, and
# replaces the logging of the process it runs in, which must not be pytest's.
DEFECT = """
import sys
from processes.shared import config, runtime

class Broken:
    def start(self):
        raise KeyError("a bug")

    def stats(self):
        return {}

    def close(self):
        pass

cfg = config.Config()
cfg.logging.dir = sys.argv[1]
cfg.logging.console = False
sys.exit(runtime.serve("gateway", cfg, lambda reactor: Broken()))
"""


@pytest.mark.timeout(60)
def test_a_defect_keeps_its_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", DEFECT, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 1, out.stdout + out.stderr
    text = (tmp_path / "gateway.log").read_text()
    assert "gateway failed: 'a bug'" in text
    assert "Traceback" in text and "KeyError: 'a bug'" in text
