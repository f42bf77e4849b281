"""STAC (or AC with algo=ac) on CartPole-v1 with a categorical actor.

python recipes/stac_cartpole.py
python recipes/stac_cartpole.py algo=ac actor_lr=0.05 critic_lr=0.001
"""

from common import hydra_entry_point

main = hydra_entry_point("config_cartpole")

if __name__ == "__main__":
    main()
