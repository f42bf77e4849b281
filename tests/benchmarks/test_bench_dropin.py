"""The drop-in benchmark (benchmarks/bench_dropin.py): its reliability summary on curves with known answers."""

from __future__ import annotations

import pytest

import bench_dropin


def run(returns: list[float], ratios: list[float] = ()) -> dict:
    """A run evaluated every 1000 frames with these returns."""
    return {"eval_curve": [[1000 * (i + 1), r] for i, r in enumerate(returns)], "correction_ratio": list(ratios)}


def test_summary_counts_reaching_collapses_and_time_at_the_maximum():
    runs = [
        run([10, 1000, 1000, 1000], [0.5, 2.0]),  # reaches at 2000, stays
        run([10, 20, 1000, 4], [1.0]),  # reaches at 3000, ends below half: a collapse
        run([10, 20, 30, 600]),  # never reaches
    ]
    summary = bench_dropin.variant_summary(runs, target=1000.0)
    assert summary["reached"] == 2
    assert summary["frames_to_reach"] == [2000, 3000, None]
    assert summary["collapsed_after_reaching"] == 1
    assert summary["share_at_target"] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert summary["final_values"] == [1000, 4, 600]
    assert summary["correction_ratio_median"] == 1.0 and summary["correction_ratio_max"] == 2.0
    assert summary["seeds"] == 3 and summary["final_ci"][0] <= summary["final_mean"] <= summary["final_ci"][1]
