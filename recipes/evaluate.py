"""Mean ± std deterministic return of a saved run of any recipe (STAC, Stackelberg-PPO, Stackelberg SAC).

python recipes/evaluate.py checkpoint=runs/Hopper-v4/stac/seed0_<time> episodes=10 [env_backend=envpool]
"""

from __future__ import annotations

from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

import recipe_cli
from recipe_checkpoints import load_checkpoint
from recipe_envs import check_env, evaluate, frozen_observation_norm, make_env
from recipe_models import make_deterministic_models, make_models, make_sac_models
from recipe_schema import EvaluateConfig, validate


def saved_recipe(state: dict[str, Any]) -> str:
    """``"stac"``, ``"stppo"`` or ``"stsac"``: recorded in the checkpoint (older ones: from their keys)."""
    if "recipe" in state:
        return state["recipe"]
    if "losses" in state:
        return "stsac"
    return "stppo" if state["config"].get("objective") == "ppo" else "stac"


def saved_actor(state: dict[str, Any], env, device: str):
    """The checkpoint's actor, rebuilt as its recipe builds it and loaded with its weights."""
    run, recipe = state["config"], saved_recipe(state)
    if recipe == "stsac":
        if run["algo"].removeprefix("st") == "sac":
            scale = {key: run[key] for key in ("scale_lb", "scale_mapping") if key in run}  # older runs: defaults
            actor, _ = make_sac_models(env, run["num_cells"], device, **scale)
        else:
            actor, _, _ = make_deterministic_models(env, run["num_cells"], device, 0.0, 0)
        prefix = "actor_network."  # the actor's weights inside the off-policy losses' state
        actor.load_state_dict({k[len(prefix) :]: v for k, v in state["losses"].items() if k.startswith(prefix)})
        return actor
    actor, _ = make_models(env, run["num_cells"], device, ppo=recipe == "stppo")
    actor.load_state_dict(state["actor"])
    return actor


@hydra.main(config_path=".", config_name="config_evaluate", version_base="1.3")
@recipe_cli.one_line_errors
def main(cfg: DictConfig) -> None:
    validate(cfg)
    state, path = load_checkpoint(cfg.checkpoint, "checkpoint")
    run = state["config"]
    check_env(run["env"], cfg.env_backend)
    saved_norm = state.get("observation_norm")
    norm = frozen_observation_norm(saved_norm) if saved_norm else False
    env = make_env(run["env"], 1, cfg.device, norm, cfg.env_backend)
    actor = saved_actor(state, env, cfg.device)
    returns = evaluate(actor, env, cfg.episodes, cfg.seed)
    env.close()
    print(
        f"{saved_recipe(state)}_mujoco.py algo={run['algo']} on {run['env']} ({cfg.env_backend}) after "
        f"{state['counters']['frames']} frames ({path.name}): return {np.mean(returns):.1f} ± "
        f"{np.std(returns):.1f} over {cfg.episodes} deterministic episodes"
    )


if __name__ == "__main__":
    recipe_cli.run(main, EvaluateConfig)
