"""Backtest numbers on a price file small enough to check by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streams.tools.backtest import (FiredAlert, WindowRow, event_study, forward_return, information_coefficient, load_prices,
                              run_backtest, write_report)

ROOT = Path(__file__).resolve().parents[1]
T = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLOSES = [100, 101, 102, 99, 98, 100, 103, 104, 104, 105, 106]  # hourly bars closing at 00:00 .. 10:00


@pytest.fixture
def prices(tmp_path) -> Path:
    path = tmp_path / "prices.csv"
    rows = ["ticker,time,open,high,low,close,volume"]
    for i, close in enumerate(CLOSES):
        rows.append(f"AAA,{(T + timedelta(hours=i)).isoformat().replace('+00:00', 'Z')},{close},{close},{close},{close},10")
    path.write_text("\n".join(rows) + "\n")
    return path


ALERTS = [
    FiredAlert("AAA", T + timedelta(hours=2, minutes=30), "negative-surge", "negative_surge", "warning", "AAA:neg"),
    FiredAlert("AAA", T + timedelta(hours=5), "positive-surge", "positive_surge", "info", "AAA:pos"),
    FiredAlert("AAA", T + timedelta(hours=5), "volume-surge", "volume_surge", "info", "AAA:vol"),  # no direction: skipped
]
WINDOWS = [WindowRow("AAA", T + timedelta(hours=h), "1h", 5, s) for h, s in enumerate([0.5, -0.2, -0.8, 0.1])]


def test_forward_returns_use_the_last_close_at_or_before_each_time(prices):
    bars = load_prices(prices)["AAA"]
    assert forward_return(bars, T + timedelta(hours=2, minutes=30), timedelta(hours=1)) == pytest.approx(99 / 102 - 1)
    assert forward_return(bars, T + timedelta(hours=8, minutes=30), timedelta(hours=1)) == pytest.approx(105 / 104 - 1)
    assert forward_return(bars, T + timedelta(hours=9, minutes=30), timedelta(hours=1)) is None  # 10:30 > last bar
    assert forward_return(bars, T + timedelta(hours=10), timedelta(hours=1)) is None  # no bar after the horizon
    assert forward_return(bars, T - timedelta(hours=1), timedelta(hours=1)) is None  # no bar before the alert


def test_alert_returns_hit_rate_and_interval_match_hand_computation(prices):
    result = run_backtest(WINDOWS, ALERTS, load_prices(prices), [timedelta(hours=1), timedelta(hours=2)])
    one = result.horizons["1h"]
    assert one["negative"]["n"] == 1 and one["positive"]["n"] == 1 and one["all"]["n"] == 2
    neg, pos = 99 / 102 - 1, 103 / 100 - 1  # -2.94 % after the negative alert, +3 % after the positive one
    assert one["negative"]["mean_return"] == pytest.approx(neg)
    assert one["negative"]["mean_signed_return"] == pytest.approx(-neg)
    assert one["all"]["mean_signed_return"] == pytest.approx((-neg + pos) / 2)
    assert one["all"]["hit_rate"] == 1.0
    sd = abs(-neg - pos) / math.sqrt(2)
    half = 12.7062047 * sd / math.sqrt(2)  # t(0.975, 1 dof)
    assert one["all"]["ci95"] == pytest.approx([(-neg + pos) / 2 - half, (-neg + pos) / 2 + half], rel=1e-6)
    two = result.horizons["2h"]
    assert two["negative"]["mean_return"] == pytest.approx(98 / 102 - 1)
    assert two["positive"]["mean_return"] == pytest.approx(104 / 100 - 1)


def test_information_coefficient_is_the_rank_correlation_by_hand(prices):
    # window ends 01:00..04:00; 1h forward returns: +0.99 %, -2.94 %, -1.01 %, +2.04 %
    # score ranks 4,2,1,3 vs return ranks 3,1,2,4: d = 1,1,-1,-1 -> 1 - 6*4/(4*15) = 0.6
    ic = information_coefficient(WINDOWS, load_prices(prices), timedelta(hours=1))
    assert ic == {"n": 4, "ic": pytest.approx(0.6)}


def test_event_study_path_around_the_negative_alert(prices):
    study = event_study(ALERTS, load_prices(prices), bars_before=1, bars_after=2)
    assert study["negative"]["n"] == 1 and study["negative"]["offsets"] == [-1, 0, 1, 2]
    assert study["negative"]["mean_cumulative_return"] == pytest.approx([101 / 102 - 1, 0, 99 / 102 - 1, 98 / 102 - 1])


def test_report_html_embeds_its_plots_and_json_has_the_numbers(prices, tmp_path):
    bars = load_prices(prices)
    result = run_backtest(WINDOWS, ALERTS, bars, [timedelta(hours=1)], bars_before=1, bars_after=2)
    html_path, json_path = write_report(result, WINDOWS, ALERTS, bars, tmp_path / "out")
    page = html_path.read_text()
    assert page.count("<img") >= 3 and page.count("data:image/png;base64,") >= 3
    assert "<h3>event study</h3>" in page and "<h3>forward returns</h3>" in page and "<h3>ticker AAA</h3>" in page
    data = json.loads(json_path.read_text())
    assert data["horizons"]["1h"]["all"]["n"] == 2
    assert data["information_coefficient"]["1h"]["ic"] == pytest.approx(0.6)


def test_shipped_sample_backtest_runs_from_a_fresh_clone(tmp_path):
    sample = ROOT / "docs" / "samples" / "backtest"
    result = subprocess.run([sys.executable, "-m", "streams.cli", "backtest", "--prices", str(sample / "prices.csv"),
                             "--results", str(sample / "results.jsonl"), "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "backtest.json").read_text())
    assert data["alerts"] > 0 and data["horizons"]["1d"]["all"]["n"] > 0
    assert (tmp_path / "report.html").read_text().count("<img") >= 3


def test_bad_price_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("symbol,when,last\nAAA,2026-01-01,1\n")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "backtest", "--prices", str(bad), "--results",
                             str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "needs columns ticker, time, close" in result.stderr
