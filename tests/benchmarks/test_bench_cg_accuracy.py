"""The CG-accuracy benchmark (benchmarks/bench_cg_accuracy.py) on a tiny Stackelberg SAC run."""

from __future__ import annotations

import bench_cg_accuracy
import pytest
import torch

from recipe_schema import load_config
from stsac_mujoco import train

TINY = ["num_cells=[16,16]", "batch_size=16", "frames_per_batch=200", "utd_ratio=0.05", "eval_episodes=1"]
TINY += ["eval_interval=400", "checkpoint_interval=400", "total_frames=400", "threads=1"]


@pytest.mark.parametrize("leader,hessian", [("critic", "fisher"), ("actor", "exact")])
def test_capped_solves_are_measured_against_the_converged_one_without_touching_the_run(tmp_path, leader, hessian):
    train(load_config("config_stsac", ["algo=stsac", f"leader={leader}", *TINY]), tmp_path)
    update, replay, about = bench_cg_accuracy.load_run(tmp_path)
    assert (about["frames"], about["hessian"], about["cg_iterations"]) == (400, hessian, 3)
    state = {key: value for key, value in update.state_dict().items() if key != "previous_solution"}
    warm_start = update.state_dict()["previous_solution"].clone()
    torch.manual_seed(0)
    result = bench_cg_accuracy.measure(update, replay, caps=[1, 200], batches=3)
    converged = result[200]  # a cap past convergence is the converged solve itself (with any fallback)
    assert converged["cosine_correction"] == pytest.approx(1.0, abs=1e-5)
    assert converged["norm_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert converged["relative_residual"] <= 1e-5 < result[1]["relative_residual"]
    assert 0 < converged["converged_correction_ratio"] and 1 < converged["converged_iterations"] < 200
    # every solve ran on a copy: the run's solver state (counter, λ's estimate, warm start) is as loaded
    assert {key: value for key, value in update.state_dict().items() if key != "previous_solution"} == state
    assert torch.equal(update.state_dict()["previous_solution"], warm_start)


def test_a_run_that_solves_nothing_is_refused(tmp_path):
    train(load_config("config_stsac", ["algo=sac", *TINY]), tmp_path)
    with pytest.raises(SystemExit, match="algo=sac, which solves nothing"):
        bench_cg_accuracy.load_run(tmp_path)
