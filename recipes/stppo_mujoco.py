"""Stackelberg-PPO (or PPO with ``algo=ac``) on a Gymnasium task: TorchRL's ClipPPOLoss with the correction.

python recipes/stppo_mujoco.py env=Hopper-v4                 # Stackelberg-PPO
python recipes/stppo_mujoco.py env=Hopper-v4 algo=ac         # PPO (TorchRL's MuJoCo settings)

Every key of ``recipe_schema.StppoConfig`` is a ``key=value`` override; ``config_stppo.yaml`` is the
preset. Per batch and epoch: GAE with the current critic; on the first epoch the hook solves once
(``hook.prepare``); per minibatch PPO's loss, its backward, the correction of the actor's gradient
(``hook.correct``), one step of each player.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.nn.utils import clip_grad_norm_
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers import SamplerWithoutReplacement

import recipe_cli
from recipe_envs import make_env, policy_evaluator
from recipe_losses import make_optimizer, make_ppo_loss
from recipe_models import make_models
from recipe_run import TrainingRun
from recipe_schema import StppoConfig


def train(cfg: DictConfig, run_dir: Path | None) -> dict[str, Any]:
    """Train as configured into ``run_dir`` (with ``resume=``, the resumed run's directory); a summary."""
    run = TrainingRun(cfg, run_dir, "stppo")  # checks, resume point, seeding
    if run.complete:
        return run.skip_complete()

    # ---- build: TorchRL's PPO networks, ClipPPOLoss and GAE, the hook, Adam(eps=1e-5) per player
    eval_env = make_env(cfg.env, 1, cfg.device)
    actor, critic = make_models(eval_env, cfg.num_cells, cfg.device, ppo=True)
    ppo_loss, advantage, hook = make_ppo_loss(cfg, actor, critic)
    actor_opt = make_optimizer(cfg.optimizer, actor.parameters(), cfg.actor_lr, eps=1e-5)
    critic_opt = make_optimizer(cfg.optimizer, critic.parameters(), cfg.critic_lr, eps=1e-5)
    run.open(
        {"actor": actor, "critic": critic, "actor_optimizer": actor_opt, "critic_optimizer": critic_opt, "hook": hook}
    )

    # ---- the collector, and the observation statistics when they are normalised (training state too)
    collector, norm = run.onpolicy_collector(actor)
    evaluate_policy = policy_evaluator(actor, eval_env, cfg, norm)
    minibatches = ReplayBuffer(
        storage=LazyTensorStorage(cfg.frames_per_batch),
        sampler=SamplerWithoutReplacement(),
        batch_size=cfg.ppo_minibatch_size,
    )
    per_batch = cfg.ppo_epochs * (cfg.frames_per_batch // cfg.ppo_minibatch_size)
    total_updates = math.ceil(cfg.total_frames / cfg.frames_per_batch) * per_batch

    # ---- the loop: collect, PPO epochs with the corrected actor gradient, log, evaluate, checkpoint
    timer = run.timer
    for batch in run.batches(collector, f"ppo {cfg.algo} {cfg.env}"):
        logged = defaultdict(list)
        done_updates = (run.counters["iterations"] - 1) * per_batch
        lr_scale = 1.0 - done_updates / total_updates if cfg.ppo_anneal else 1.0  # at this batch's start
        for epoch in range(cfg.ppo_epochs):
            with timer("advantage"), torch.no_grad():
                advantage(batch)  # GAE with the current critic, every epoch (as TorchRL's recipe)
            if epoch == 0 and hook is not None:
                with timer("implicit"):  # one solve per batch, with the critic PPO's last epochs left
                    logged.update({f"implicit/{k}": [float(v)] for k, v in hook.prepare(batch).items()})
            minibatches.empty()  # a fresh permutation per epoch, drawn now (keeps a resume exact)
            minibatches.extend(batch.reshape(-1))
            for minibatch in minibatches:
                with timer("update"):
                    scale = 1.0 - done_updates / total_updates if cfg.ppo_anneal else 1.0
                    for optimizer, lr in ((actor_opt, cfg.actor_lr), (critic_opt, cfg.critic_lr)):
                        for group in optimizer.param_groups:
                            group["lr"] = lr * scale
                    actor_opt.zero_grad()
                    critic_opt.zero_grad()
                    losses = ppo_loss(minibatch)
                    (losses["loss_objective"] + losses.get("loss_entropy", 0.0) + losses["loss_critic"]).backward()
                if hook is not None:
                    with timer("implicit"):  # the actor's .grad becomes the total derivative
                        for k, v in hook.correct(minibatch).items():
                            logged[f"implicit/{k}"].append(float(v))
                with timer("update"):
                    if cfg.max_grad_norm is not None:
                        logged["actor_grad_norm"].append(float(clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)))
                    actor_opt.step()
                    critic_opt.step()
                done_updates += 1
                for name in ("loss_objective", "loss_critic", "kl_approx", "clip_fraction"):
                    logged[name].append(float(losses[name].detach()))
        metrics = {f"loss/{k[5:]}" if k.startswith("loss_") else k: float(np.mean(v)) for k, v in logged.items()}
        metrics["ppo/kl_approx"] = metrics.pop("kl_approx")
        metrics["ppo/clip_fraction"] = metrics.pop("clip_fraction")
        metrics["ppo/lr_scale"] = lr_scale

        if run.evaluation_due():
            metrics.update(run.evaluate(evaluate_policy))
        run.log(batch, metrics)
        if run.checkpoint_due():
            run.checkpoint()  # then fresh seeded episodes: a resumed run is bit-identical

    eval_env.close()  # the collector's shutdown closed the training envs
    return run.finish(f"ppo {cfg.algo}", updates=run.counters["iterations"] * per_batch)


if __name__ == "__main__":
    recipe_cli.main(train, "config_stppo", StppoConfig)
