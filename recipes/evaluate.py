"""Mean ± std deterministic return of a saved checkpoint.

python recipes/evaluate.py checkpoint=runs/Hopper-v4/stac/seed0_.../checkpoint.pt episodes=10
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from common import CHECKPOINT_NAME, check_env_id, evaluate, make_env, make_models


@hydra.main(config_path=".", config_name="config_evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    path = Path(cfg.checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        sys.exit(f"error: checkpoint={cfg.checkpoint}: no checkpoint there.")
    if cfg.episodes < 1:
        sys.exit(f"error: episodes={cfg.episodes} must be >= 1.")
    state = torch.load(path, weights_only=False)
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
