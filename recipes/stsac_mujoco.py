"""Off-policy Stackelberg on MuJoCo: SAC, TD3 or DDPG (``algo=sac|td3|ddpg``) and their Stackelberg
twins (``algo=stsac|sttd3|stddpg``, ``leader=actor|critic``).

python recipes/stsac_mujoco.py env=Hopper-v4                       # Stackelberg SAC, the actor leads
python recipes/stsac_mujoco.py env=Hopper-v4 leader=critic         # the critic leads
python recipes/stsac_mujoco.py env=Hopper-v4 algo=sac              # plain SAC (Tianshou's settings)
python recipes/stsac_mujoco.py env=HalfCheetah-v4 algo=sttd3       # Stackelberg TD3 (algo=td3: TD3)

Every key of ``recipe_schema.StsacConfig`` is a ``key=value`` override; ``config_stsac.yaml`` is the
preset. Per batch: collect ``frames_per_batch`` steps into a replay buffer, then ``utd_ratio``
updates per step, each on one minibatch and one noise draw for both players (leader: total
derivative; follower: its own gradient; α: its own loss), then Polyak-averaged targets; a row of
metrics (means over the updates since the last) every ``log_interval`` frames and at evaluations. TD3's
actor and targets step every ``policy_delay`` updates; TD3 and DDPG explore with Gaussian noise.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer

import recipe_cli
from recipe_checkpoints import CompactReplay
from recipe_envs import make_collector, make_env, policy_evaluator
from recipe_losses import make_offpolicy, make_optimizer
from recipe_models import make_offpolicy_models
from recipe_run import TrainingRun
from recipe_schema import (
    ConfigError,
    StsacConfig,
    offpolicy_learning_rates,
    offpolicy_warmup,
    with_offpolicy_curvature,
)
from torchrl_stac import plain_gradients


def critic_first_step(loss, minibatch, critic_opt) -> dict[str, torch.Tensor]:
    """Step the critics on their loss first, then set the actor's and α's gradients with the stepped critics."""
    loss.draw_noise(minibatch)
    loss_qvalue = loss.qvalue_loss(minibatch)
    critic_opt.zero_grad(set_to_none=True)
    loss_qvalue.backward(inputs=loss.critic_params)
    critic_opt.step()
    critic_opt.zero_grad(set_to_none=True)
    losses = plain_gradients(loss, minibatch)
    for param in loss.critic_params:  # the critics stepped already
        param.grad = None
    return {"loss_qvalue": loss_qvalue.detach(), "loss_actor": losses["loss_actor"]}


def extend_replay(replay: ReplayBuffer, rows: TensorDictBase, buffer_size: int) -> None:
    """Add ``rows`` to the replay buffer, whose storage is allocated at the first call: a
    ``buffer_size`` too large for this machine's memory is a configuration error."""
    try:
        replay.extend(rows)
    except RuntimeError as error:
        if "allocate memory" not in str(error):
            raise
        raise ConfigError(f"buffer_size={buffer_size}: the replay buffer does not fit in memory; lower it.") from None


def train(cfg: DictConfig, run_dir: Path | None) -> dict[str, Any]:
    """Train as configured into ``run_dir`` (with ``resume=``, the resumed run's directory); a summary."""
    cfg = with_offpolicy_curvature(cfg)  # hessian, regularization_decay: null is the leader's own
    run = TrainingRun(cfg, run_dir, "stsac")  # checks, resume point, seeding
    if run.complete:
        return run.skip_complete()

    # ---- build: networks, the two players' losses, the Stackelberg update, optimizers, replay buffer
    base = cfg.algo.removeprefix("st")  # sac, td3 or ddpg
    eval_env = make_env(cfg.env, 1, cfg.device)
    actor, policy, critics = make_offpolicy_models(cfg, eval_env)  # policy: what the collector runs
    loss, stackelberg = make_offpolicy(cfg, actor, critics, eval_env.action_spec_unbatched)
    actor_lr, critic_lr = offpolicy_learning_rates(cfg)
    actor_opt = make_optimizer("adam", loss.actor_params, actor_lr)
    critic_opt = make_optimizer("adam", loss.critic_params, critic_lr)
    alpha_opt = make_optimizer("adam", [loss.log_alpha], cfg.alpha_lr) if base == "sac" else None
    actor_delay = cfg.policy_delay if base == "td3" else 1
    replay = ReplayBuffer(storage=LazyTensorStorage(cfg.buffer_size), batch_size=cfg.batch_size)
    run.open(
        {
            "losses": loss,  # actor, critics, their targets (and SAC's log α)
            "actor_optimizer": actor_opt,
            "critic_optimizer": critic_opt,
            "alpha_optimizer": alpha_opt,
            "stackelberg": stackelberg,
            "replay_buffer": CompactReplay(replay),  # its filled rows only
        },
        counters={"updates": 0},
    )
    warmup = offpolicy_warmup(cfg.init_random_frames, cfg.total_frames)
    collector = make_collector(
        cfg.env, policy, frames_per_batch=cfg.frames_per_batch, total_frames=run.frames_left(cfg.frames_per_batch)
    )
    collector.init_random_frames = max(0, warmup - run.counters["frames"])  # uniform actions until then
    evaluate_policy = policy_evaluator(actor, eval_env, cfg)

    # ---- the loop: collect into the buffer, utd_ratio updates per step, log, evaluate, checkpoint
    logged = defaultdict(list)  # each update's diagnostics since the last written row
    for batch in run.batches(collector, f"{cfg.algo} {cfg.env}"):
        extend_replay(replay, batch.reshape(-1), cfg.buffer_size)
        if run.counters["frames"] >= warmup:
            with run.timer("update"):
                for _ in range(int(cfg.utd_ratio * batch.numel())):
                    minibatch = replay.sample()
                    if stackelberg is not None:  # leader: total derivative; follower and α: their own
                        diagnostics = stackelberg(minibatch)
                        prefix = "implicit/"
                    elif cfg.update_order == "critic_first":  # SB3's order: the actor sees the stepped critic
                        diagnostics = critic_first_step(loss, minibatch, critic_opt)
                        prefix = f"{base}/"
                    else:  # each player's own partial gradient
                        diagnostics = plain_gradients(loss, minibatch)
                        prefix = f"{base}/"
                    actor_step = run.counters["updates"] % actor_delay == 0  # TD3: the actor and targets lag
                    for optimizer in (actor_opt if actor_step else None, critic_opt, alpha_opt):
                        if optimizer is not None:
                            optimizer.step()
                    for optimizer in (actor_opt, critic_opt, alpha_opt):
                        if optimizer is not None:
                            optimizer.zero_grad(set_to_none=True)
                    if actor_step:
                        loss.update_targets(cfg.tau)
                    run.counters["updates"] += 1
                    for key, value in diagnostics.items():
                        logged[prefix + key].append(float(value))
        evaluated = run.evaluate(evaluate_policy) if run.evaluation_due() else None
        metrics = None  # this batch writes no row: its diagnostics wait for the next one
        if evaluated is not None or run.log_due():  # a row: the means over every update since the last
            metrics = {key: float(np.mean(values)) for key, values in logged.items()} | (evaluated or {})
            if base == "sac":
                metrics["alpha"] = float(loss.alpha)
            logged.clear()
        run.log(batch, metrics)
        if run.checkpoint_due():
            run.checkpoint()  # then fresh seeded episodes: a resumed run is bit-identical

    eval_env.close()
    label = f"{cfg.algo} ({cfg.leader} leads)" if stackelberg is not None else cfg.algo
    return run.finish(label, leader=cfg.leader, updates=run.counters["updates"])


if __name__ == "__main__":
    recipe_cli.main(train, "config_stsac", StsacConfig)
