"""STAC (or AC with algo=ac) on CartPole-v1 with a categorical actor.

python recipes/stac_cartpole.py
python recipes/stac_cartpole.py algo=ac actor_lr=0.05 critic_lr=0.001
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common import ConfigError, train


@hydra.main(config_path=".", config_name="config_cartpole", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
