"""Mean ± std deterministic return of a saved checkpoint.

python recipes/evaluate.py checkpoint=runs/Hopper-v4/stac/seed0_.../checkpoint.pt episodes=10
"""

from __future__ import annotations

import sys

import hydra
import numpy as np
from omegaconf import DictConfig

from common import ConfigError, check_env_id, evaluate, load_checkpoint, make_env, make_models


@hydra.main(config_path=".", config_name="config_evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        state = load_checkpoint(cfg.checkpoint, "checkpoint")
    except ConfigError as error:
        sys.exit(f"error: {error}")
    if cfg.episodes < 1:
        sys.exit(f"error: episodes={cfg.episodes} must be >= 1.")
    run = state["config"]
    check_env_id(run["env"])
    env = make_env(run["env"], 1, cfg.device)
    actor, _ = make_models(env, run["num_cells"], cfg.device)
    actor.load_state_dict(state["actor"])
    returns = evaluate(actor, env, cfg.episodes, cfg.seed)
    env.close()
    print(
        f"{run['algo']} on {run['env']} after {state['counters']['frames']} frames: "
        f"return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {cfg.episodes} deterministic episodes"
    )


if __name__ == "__main__":
    main()
