"""The drop-in benchmark (benchmarks/bench_dropin.py): its reliability summary on curves with known answers,
and short seeded drop-in loops with the hook's default solver."""

from __future__ import annotations

import math

import pytest

import bench_dropin
from torchrl_stac.follower_solver import SAFE_CORRECTION_MAX_RATIO


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


def test_the_hooks_default_in_seeded_dropin_loops_never_lets_the_correction_outgrow_the_gradient():
    """The README's loop (InvertedPendulum-v4, envs seeded) with ``ImplicitGradientHook(actor_loss,
    critic_loss)``, for three seeds: every correction acts and is at most ρ = 1 times the partial
    gradient (the fixed λ = 50 drop-in reached up to 2631×), and a seed gives the same run again."""
    short = {"total_frames": 1000, "eval_every": 1000}  # 5 actor steps of 200 frames, one evaluation
    runs = {seed: bench_dropin.dropin_loop("default", seed, **short) for seed in (0, 1, 2)}
    for record in runs.values():
        ratios = record["correction_ratio"]
        assert len(ratios) == 5
        assert all(0 < ratio <= SAFE_CORRECTION_MAX_RATIO * (1 + 1e-5) for ratio in ratios), ratios
        assert all(math.isfinite(value) for _, value in record["eval_curve"])
        assert record["solver"]["regularization_decay"] == "condition"
        assert record["solver"]["correction_max_ratio"] == SAFE_CORRECTION_MAX_RATIO
    assert bench_dropin.dropin_loop("default", 0, **short) == runs[0]
    assert runs[0]["correction_ratio"] != runs[1]["correction_ratio"]
