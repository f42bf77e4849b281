"""STAC (or AC with algo=ac) on a Gymnasium MuJoCo task.

python recipes/stac_mujoco.py env=Hopper-v4
python recipes/stac_mujoco.py env=Walker2d-v4 algo=ac seed=3 total_frames=500_000
"""

from common import hydra_entry_point

main = hydra_entry_point("config_mujoco")

if __name__ == "__main__":
    main()
