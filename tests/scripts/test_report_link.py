"""bench/report.py renders bench_multihost's figures as the "across a veth link" row."""

from __future__ import annotations

import pytest

from bench import report
from bench.bench_multihost import HOPS, SIDES

pytestmark = pytest.mark.timeout(30)


def _doc() -> dict:
    """A run's JSON as pytest-benchmark saves it, with bench_multihost's extra_info keys; each
    figure distinct, so a row that shows the wrong side's figure fails."""
    info: dict = {"layout": "one-core-rt", "seconds": 20.0, "tick_rate": 1000}
    for s, side in enumerate(SIDES):
        for h, hop in enumerate(HOPS):
            info[f"{side}_{hop}_count"] = 100 + h
            for k, key in enumerate(("p50", "p99", "p99.9", "max")):
                info[f"{side}_{hop}_{key}_us"] = 1000.0 * (s + 1) + 100 * h + k
        info[f"{side}_orders"] = 900 + s
    info["ratio_tick_to_ack_p50"] = round(info["link_tick_to_ack_p50_us"]
                                          / info["single_tick_to_ack_p50_us"], 3)
    return {"datetime": "2026-12-01T00:00:00", "benchmarks": [
        {"name": "test_tick_to_ack_across_a_veth_link", "group": "e2e-link",
         "extra_info": info, "stats": {"median": 1.0}}]}


def test_the_report_has_the_across_link_row():
    doc = _doc()
    info = doc["benchmarks"][0]["extra_info"]
    text = report.render(doc, None)
    assert "## More than one host: across a veth link" in text
    row = next(line for line in text.splitlines() if line.startswith("| across a veth link |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    tick_to_ack = " / ".join(report.fmt_us(info[f"link_tick_to_ack_{k}_us"])
                             for k in ("p50", "p99", "p99.9"))
    assert cells[4] == tick_to_ack and cells[5] == "901"
    assert f"**{info['ratio_tick_to_ack_p50']:.2f}x**" in text


def test_a_run_without_namespaces_says_so():
    assert report.link_section({"benchmarks": []})[0].startswith("Not measured")
