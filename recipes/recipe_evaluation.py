"""Deterministic evaluation of a policy."""

from __future__ import annotations

import torch
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type
from torchrl.modules import ProbabilisticActor


def evaluate(actor: ProbabilisticActor, env: EnvBase, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` full episodes with the deterministic policy (mode of the distribution);
    episode ``i`` is seeded ``seed + i``."""
    returns = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for episode in range(episodes):
            env.set_seed(seed + episode)
            rollout = env.rollout(max_steps=100_000, policy=actor, break_when_any_done=True)
            returns.append(float(rollout["next", "reward"].sum()))
    return returns
