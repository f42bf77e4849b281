"""Mean ± std deterministic return of a saved run.

python recipes/evaluate.py checkpoint=runs/Hopper-v4/stac/seed0_<time> episodes=10 [env_backend=envpool]
"""

from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

import recipe_cli
from recipe_checkpoints import load_checkpoint
from recipe_envs import check_env, frozen_observation_norm, make_env
from recipe_evaluation import evaluate
from recipe_models import make_models
from recipe_schema import EvaluateConfig, validate


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
    actor, _ = make_models(env, run["num_cells"], cfg.device, ppo=run.get("objective") == "ppo")
    actor.load_state_dict(state["actor"])
    returns = evaluate(actor, env, cfg.episodes, cfg.seed)
    env.close()
    print(
        f"{run['algo']} on {run['env']} ({cfg.env_backend}) after {state['counters']['frames']} frames ({path.name}): "
        f"return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {cfg.episodes} deterministic episodes"
    )


if __name__ == "__main__":
    recipe_cli.run(main, EvaluateConfig)
