"""The envpool backend (``env_backend=envpool``): TorchRL's envpool env with the recipe's transforms.

Without the ``[envpool]`` extra installed, the recipe must say what to install; with it, episodes
must end and restart as on the Gymnasium backend and the recipe must train.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("envpool", "gym", "treevalue"))
needs_envpool = pytest.mark.skipif(not INSTALLED, reason="envpool extra not installed (pip install -e '.[envpool]')")


def run_recipe(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "recipes" / "stac_mujoco.py"), "env=Hopper-v4", "env_backend=envpool"]
    return subprocess.run(
        [*command, *overrides, f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(INSTALLED, reason="checks the message shown when the envpool extra is missing")
def test_envpool_backend_without_the_extra_says_what_to_install(tmp_path):
    result = run_recipe(tmp_path, "total_frames=1000")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: env_backend=envpool needs envpool")
    assert "pip install -e '.[envpool]'" in result.stderr
    assert not (tmp_path / "run").exists()


@needs_envpool
def test_episodes_end_with_their_own_final_observation_and_restart():
    from recipe_envs import make_env

    env = make_env("Hopper-v4", 4, backend="envpool")
    env.set_seed(0)
    rollout = env.rollout(400, break_when_any_done=False)  # [envs, time]
    assert rollout["next", "done"].shape == rollout["next", "reward"].shape == (4, 400, 1)
    done = rollout["next", "done"][..., 0]
    env_index, step = done.nonzero()[0].tolist()
    assert rollout["next", "terminated"][env_index, step].item()  # Hopper ends by falling here
    final, first = rollout["next", "observation"][env_index, step], rollout["observation"][env_index, step + 1]
    assert not torch.allclose(final, first)  # the partial reset did not overwrite the final observation
    height, angle = final[0].item(), final[1].item()
    assert height <= 0.7 or abs(angle) >= 0.2  # Hopper's unhealthy region: a genuine last state
    assert rollout["step_count"][env_index, step + 1].item() == 0
    assert rollout["next", "episode_reward"][env_index, step + 1].item() == pytest.approx(
        rollout["next", "reward"][env_index, step + 1].item(), rel=1e-5
    )
    assert done.sum() > 4  # every env keeps running episodes after its first one


@needs_envpool
def test_seeds_beyond_int32_are_folded_deterministically():
    from recipe_envs import make_env

    env = make_env("Hopper-v4", 4, backend="envpool")
    first = [env.set_seed(seed) for seed in (0, 2**32 - 7)]  # collector workers chain 32-bit unsigned seeds
    observations = []
    for seed in (2**32 - 7, 2**32 - 7, 0):
        env.set_seed(seed)
        observations.append(env.reset()["observation"])
    assert all(isinstance(value, int) for value in first)
    assert torch.equal(observations[0], observations[1])
    assert not torch.equal(observations[0], observations[2])


@needs_envpool
def test_recipe_trains_on_envpool(tmp_path):
    result = run_recipe(tmp_path, "total_frames=4000", "num_envs=8", "critic_steps=2", "eval_episodes=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "done: stac on Hopper-v4" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "frames_000000004000.pt").is_file()
