"""The bench's summaries of what the shim's histograms counted between two scrapes."""

from __future__ import annotations

import math

from bench import report, stats


def test_loop_lag_shares_count_only_the_samples_between_the_two_scrapes() -> None:
    before = {0.01: 90.0, 0.05: 100.0, 0.1: 100.0, math.inf: 100.0}
    # 200 samples since: 100 within 10 ms, 50 more within 50 ms, 30 within 100 ms, 20 later.
    after = {0.01: 190.0, 0.05: 250.0, 0.1: 280.0, math.inf: 300.0}
    lag = stats.over_bounds(before, after, (0.01, 0.05, 0.1))
    assert lag == {"samples": 200, "over_10ms": 0.5, "over_50ms": 0.25, "over_100ms": 0.1}
    assert report._loop_lag(lag) == "50 % / 25 % / 10 % of 200"


def test_a_failed_scrape_gives_no_loop_lag_rather_than_a_wrong_one() -> None:
    assert stats.over_bounds({}, {math.inf: 5.0}, (0.01,)) == {}
    assert report._loop_lag({}) == "-"
