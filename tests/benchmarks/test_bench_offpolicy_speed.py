"""benchmarks/bench_offpolicy_speed.py: its medians, ratios and table on known rounds, and one real timed arm."""

from __future__ import annotations

import pytest

import bench_offpolicy_speed as speed


def timing(seconds: float, collect: float, update: float) -> dict:
    return {
        "seconds": seconds,
        "updates": 90,
        "phase_seconds": {"collect": collect, "update": update, "other": seconds - collect - update},
    }


def synthetic_round(scale: float, sb3: bool) -> dict:
    """A round whose arms take ``scale`` × (4, 3, 6, 2) seconds; without SB3 its arm is None."""
    arms = {
        speed.PER_STEP: timing(4 * scale, scale, 2 * scale),
        speed.EVERY_50: timing(3 * scale, 0.5 * scale, 2 * scale),
        speed.STACKELBERG: timing(6 * scale, scale, 4 * scale),
        speed.SB3: {"seconds": 2 * scale, "updates": 90, "phase_seconds": {}} if sb3 else None,
    }
    return {"arms": arms, "ratios": speed.round_ratios(arms)}


def test_summary_takes_medians_per_1000_frames_and_the_median_of_each_rounds_ratio():
    rounds = [synthetic_round(scale, sb3=True) for scale in (1.0, 3.0, 2.0)]
    summary = speed.summarize(rounds, frames=500)
    per_step = summary["arms"][speed.PER_STEP]
    assert per_step["seconds_per_1000_frames"] == pytest.approx(2 * 4 * 2.0)  # median scale 2, ×1000/500
    assert per_step["phase_seconds_per_1000_frames"] == pytest.approx({"collect": 4.0, "update": 8.0, "other": 4.0})
    assert summary["arms"][speed.SB3]["phase_seconds_per_1000_frames"] == {}
    assert summary["ratios"] == pytest.approx(
        {"per step / every 50": 4 / 3, "Stackelberg SAC / SAC": 6 / 4, "SAC / SB3 SAC": 4 / 2}
    )


def test_without_sb3_its_row_says_so_and_its_ratio_is_left_out():
    rounds = [synthetic_round(1.0, sb3=False)]
    summary = speed.summarize(rounds, frames=1000)
    assert summary["arms"][speed.SB3] is None and summary["ratios"]["SAC / SB3 SAC"] is None
    record = {"env": "Hopper-v4", "rounds": 1, "frames": 1000, "warmup": 100, "threads": 1, "torch": "x"}
    text = speed.table(record | {"summary": summary})
    assert f"| {speed.SB3} | | not installed" in text
    assert "SAC / SB3 SAC" not in text and "per step / every 50: 1.33" in text
    assert f"| {speed.PER_STEP} | 90 | 4.0 | 1.0 | 2.0 | 1.0 |" in text


def test_a_timed_recipe_arm_reports_its_updates_and_phases_within_its_wall_time():
    frames = 100  # warm-up 10, then 50-frame batches: updates after the batches ending at 50 and 100
    result = speed.recipe_timing("Pendulum-v1", frames, speed.RECIPE_ARMS[speed.EVERY_50])
    assert result["updates"] == 100
    phases = result["phase_seconds"]
    assert set(phases) == {"collect", "update", "other"}
    assert phases["collect"] > 0 and phases["update"] > 0 and phases["other"] > 0
    assert sum(phases.values()) == pytest.approx(result["seconds"])
