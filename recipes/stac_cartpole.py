"""Alias: ``python recipes/stac_mujoco.py --config-name config_cartpole`` (STAC / AC on CartPole-v1).

python recipes/stac_cartpole.py
python recipes/stac_cartpole.py algo=ac actor_lr=0.05 critic_lr=0.001
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[1:1] = ["--config-name", "config_cartpole"]
    runpy.run_path(str(Path(__file__).with_name("stac_mujoco.py")), run_name="__main__")
