"""STAC (or AC with ``algo=ac``) on CartPole-v1 with a categorical actor.

python recipes/stac_cartpole.py
python recipes/stac_cartpole.py algo=ac actor_lr=0.05 critic_lr=0.001

The loop is the MuJoCo recipe's, unchanged: ``train`` in ``stac_mujoco.py`` (collect → advantages →
k critic steps → actor loss → Stackelberg correction → step). Only the preset differs:
``config_cartpole.yaml`` (λ = 0, Gauss-Newton curvature, the paper's CartPole learning rates).
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import recipe_cli
from stac_mujoco import train


@hydra.main(config_path=".", config_name="config_cartpole", version_base="1.3")
@recipe_cli.one_line_errors
def main(cfg: DictConfig) -> None:
    train(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    recipe_cli.run(main)
