"""STAC (or AC with ``algo=ac``) on a Gymnasium task: the paper's Algorithm 1 as a TorchRL loop.

python recipes/stac_mujoco.py env=Hopper-v4
python recipes/stac_mujoco.py env=Walker2d-v4 algo=ac seed=3 total_frames=500_000
python recipes/stac_mujoco.py --config-name config_cartpole                 # CartPole-v1, the paper's settings
python recipes/stac_mujoco.py resume=runs/Hopper-v4/stac/seed0_<time>      # continue in place

Every key of ``recipe_schema.StacConfig`` is a ``key=value`` override; ``config_mujoco.yaml`` is the
preset. Per batch: GAE advantages and Monte-Carlo targets, k critic steps, the actor's partial
gradient, the Stackelberg correction (``ImplicitGradientHook``), one actor step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.utils import clip_grad_norm_
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers import SamplerWithoutReplacement

import recipe_cli
from recipe_envs import make_env, policy_evaluator
from recipe_losses import make_losses, make_optimizer
from recipe_models import make_models
from recipe_run import TrainingRun
from recipe_schema import StacConfig


def train(cfg: DictConfig, run_dir: Path | None) -> dict[str, Any]:
    """Train as configured into ``run_dir`` (with ``resume=``, the resumed run's directory); a summary."""
    run = TrainingRun(cfg, run_dir, "stac")  # checks, resume point, seeding
    if run.complete:
        return run.skip_complete()

    # ---- build: models, the two players' losses, the hook, optimizers
    eval_env = make_env(cfg.env, 1, cfg.device)
    actor, critic = make_models(eval_env, cfg.num_cells, cfg.device)
    actor_loss, critic_loss, hook = make_losses(cfg, actor, critic)
    actor_opt = make_optimizer(cfg.optimizer, actor.parameters(), cfg.actor_lr)
    critic_opt = make_optimizer(cfg.optimizer, critic.parameters(), cfg.critic_lr)
    run.open(
        {"actor": actor, "critic": critic, "actor_optimizer": actor_opt, "critic_optimizer": critic_opt, "hook": hook}
    )

    # ---- the collector, and the observation statistics when they are normalised (training state too)
    collector, norm = run.onpolicy_collector(actor)
    evaluate_policy = policy_evaluator(actor, eval_env, cfg, norm)
    critic_batches = None  # full-batch critic steps (the paper) unless critic_minibatch_size is set
    if cfg.critic_minibatch_size is not None:
        critic_batches = ReplayBuffer(
            storage=LazyTensorStorage(cfg.frames_per_batch),
            sampler=SamplerWithoutReplacement(),
            batch_size=cfg.critic_minibatch_size,
        )

    # ---- the loop: collect, k critic steps, the actor's total-derivative step, log, evaluate, checkpoint
    timer = run.timer
    for batch in run.batches(collector, f"{cfg.algo} {cfg.env}"):
        with timer("critic"):
            with torch.no_grad():  # targets with the critic before the inner loop
                critic_loss.value_estimator(batch)  # value_target: Monte-Carlo returns G_t
                actor_loss.value_estimator(batch)  # advantage: GAE Â_t
            if critic_batches is not None:
                critic_batches.empty()
                critic_batches.extend(batch.reshape(-1))
            for _ in range(cfg.critic_steps):  # the follower's k steps on L(w) = mean (V_w(s_t) − G_t)²
                critic_opt.zero_grad()
                loss_critic = critic_loss(critic_batches.sample() if critic_batches is not None else batch)
                loss_critic["loss_critic"].backward()
                critic_opt.step()
        with timer("actor"):  # the leader's partial gradient: .grad = −∂J/∂θ
            actor_opt.zero_grad()
            losses = actor_loss(batch)
            (losses["loss_objective"] + losses.get("loss_entropy", 0.0)).backward()
        metrics = {"loss/critic": loss_critic["loss_critic"].item(), "loss/objective": losses["loss_objective"].item()}
        if hook is not None:  # the Stackelberg correction: .grad = −dJ/dθ (algo=ac skips it)
            with timer("implicit"):
                metrics.update({f"implicit/{k}": float(v) for k, v in hook(batch).items()})
        with timer("actor"):  # the actor's step along the (clipped) total gradient
            if cfg.max_grad_norm is not None:
                metrics["actor_grad_norm"] = float(clip_grad_norm_(actor.parameters(), cfg.max_grad_norm))
            actor_opt.step()

        if run.evaluation_due():
            metrics.update(run.evaluate(evaluate_policy))
        run.log(batch, metrics)
        if run.checkpoint_due():
            run.checkpoint()  # then fresh seeded episodes: a resumed run is bit-identical

    summary = run.finish(cfg.algo)
    eval_env.close()  # the collector's shutdown closed the training envs
    return summary


if __name__ == "__main__":
    recipe_cli.main(train, "config_mujoco", StacConfig)
