"""STAC (or AC with algo=ac) on a Gymnasium MuJoCo task.

python recipes/stac_mujoco.py env=Hopper-v4
python recipes/stac_mujoco.py env=Walker2d-v4 algo=ac seed=3 total_frames=500_000
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common import ConfigError, train


@hydra.main(config_path=".", config_name="config_mujoco", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
