"""STAC (or AC with ``algo=ac``) on a Gymnasium MuJoCo task: the paper's Algorithm 1 as a TorchRL loop,
or with ``objective=ppo`` TorchRL's PPO with the Stackelberg correction (``algo=ac``: plain PPO).

python recipes/stac_mujoco.py env=Hopper-v4
python recipes/stac_mujoco.py env=Walker2d-v4 algo=ac seed=3 total_frames=500_000
python recipes/stac_mujoco.py env=Hopper-v4 objective=ppo                  # Stackelberg-PPO
python recipes/stac_mujoco.py resume=runs/Hopper-v4/stac/seed0_<time>      # continue in place

Every key of ``recipe_schema.StacConfig`` is a ``key=value`` override; ``config_mujoco.yaml`` is the preset.
The builders live beside this file: ``recipe_envs.py``, ``recipe_models.py``, ``recipe_losses.py``, ``recipe_logs.py``,
``recipe_checkpoints.py``, ``recipe_evaluation.py``; ``recipe_cli.py`` turns bad input into one ``error:`` line.
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torch.nn.utils import clip_grad_norm_
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers import SamplerWithoutReplacement

import recipe_cli
from recipe_checkpoints import complete, restore, resume_point, seed_everything, write_checkpoint
from recipe_envs import check_env, make_collector, make_env, observation_norm
from recipe_evaluation import evaluate
from recipe_logs import PhaseTimer, make_logger
from recipe_losses import make_losses, make_optimizer, make_ppo_loss
from recipe_models import make_models
from recipe_schema import validate
from recipe_tracker import RunTracker


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train as configured, logging and checkpointing into ``run_dir``; returns a summary.

    With ``resume=<run dir>`` the run continues in that directory (``run_dir`` is ignored).
    """
    # ---- check everything before building anything
    validate(cfg)
    check_env(cfg.env, cfg.env_backend)
    resumed, resumed_from, run_dir = resume_point(cfg, run_dir)
    if complete(cfg, resumed):  # resume=auto on a finished run (e.g. a relaunched sweep)
        print(f"{run_dir} already holds {resumed['counters']['frames']} frames: nothing to train", flush=True)
        return {"frames": resumed["counters"]["frames"], "run_dir": str(run_dir)}

    # ---- build: models, the two players' losses, the hook, optimizers
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    ppo = cfg.objective == "ppo"
    eval_env = make_env(cfg.env, 1, cfg.device)
    actor, critic = make_models(eval_env, cfg.num_cells, cfg.device, ppo=ppo)
    if ppo:
        ppo_loss, advantage, hook = make_ppo_loss(cfg, actor, critic)
    else:
        actor_loss, critic_loss, hook = make_losses(cfg, actor, critic)
    eps = 1e-5 if ppo else 1e-8
    actor_opt = make_optimizer(cfg.optimizer, actor.parameters(), cfg.actor_lr, eps)
    critic_opt = make_optimizer(cfg.optimizer, critic.parameters(), cfg.critic_lr, eps)
    stateful = {
        "actor": actor,
        "critic": critic,
        "actor_optimizer": actor_opt,
        "critic_optimizer": critic_opt,
        "hook": hook,
    }
    counters = {"frames": 0, "iterations": 0, "evaluations": 0}
    if resumed is not None:
        counters = restore(stateful, resumed)
        print(f"resuming {run_dir} from {resumed_from.name} at {counters['frames']} frames", flush=True)

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    logger = make_logger(
        cfg.logger, run_dir, counters["frames"] if resumed else None, resumed.get("logger") if resumed else None
    )
    iterations = math.ceil((cfg.total_frames - counters["frames"]) / cfg.frames_per_batch)
    train_env = None
    if cfg.collector_workers == 1:
        train_env = make_env(cfg.env, cfg.num_envs, cfg.device, cfg.normalize_observations, cfg.env_backend)
    norm = observation_norm(train_env) if train_env is not None else None
    empty_norm = copy.deepcopy(norm.state_dict()) if norm is not None else None
    collector = make_collector(cfg, actor, iterations * cfg.frames_per_batch, train_env)
    if norm is not None:  # running observation statistics: part of the training state. Building the
        # collector reset the env once, unseeded: start again from empty (or the saved) statistics
        stateful["observation_norm"] = norm
        norm.load_state_dict(resumed["observation_norm"] if resumed is not None else empty_norm)
    minibatches = None  # pg: full-batch critic steps (the paper) unless critic_minibatch_size is set
    if ppo or cfg.critic_minibatch_size is not None:
        minibatches = ReplayBuffer(
            storage=LazyTensorStorage(cfg.frames_per_batch),
            sampler=SamplerWithoutReplacement(),
            batch_size=cfg.ppo_minibatch_size if ppo else cfg.critic_minibatch_size,
        )
    timer = PhaseTimer()

    def pg_update(batch: TensorDictBase) -> dict[str, float]:
        """The paper's Algorithm 1 on one batch: one Stackelberg actor step after k critic steps."""
        with timer("critic"):
            # targets with the critic before the inner loop
            with torch.no_grad():
                critic_loss.value_estimator(batch)  # value_target: Monte-Carlo returns G_t
                actor_loss.value_estimator(batch)  # advantage: GAE Â_t
            if minibatches is not None:
                minibatches.empty()
                minibatches.extend(batch.reshape(-1))
            # the follower's k unrolled steps on L(w) = mean (V_w(s_t) − G_t)²
            for _ in range(cfg.critic_steps):
                critic_opt.zero_grad()
                sample = minibatches.sample() if minibatches is not None else batch
                loss_critic = critic_loss(sample)["loss_critic"]
                loss_critic.backward()
                critic_opt.step()
        with timer("actor"):
            # the leader's partial gradient: .grad = −∂J/∂θ
            actor_opt.zero_grad()
            losses = actor_loss(batch)
            (losses["loss_objective"] + losses.get("loss_entropy", 0.0)).backward()
        metrics = {"loss/critic": loss_critic.item(), "loss/objective": losses["loss_objective"].item()}
        with timer("implicit"):
            # the Stackelberg correction: .grad = −dJ/dθ (algo=stac; algo=ac skips it)
            if hook is not None:
                metrics.update({f"implicit/{k}": float(v) for k, v in hook(batch).items()})
        with timer("actor"):
            # the actor's step along the (clipped) total gradient
            if cfg.max_grad_norm is not None:
                metrics["actor_grad_norm"] = float(clip_grad_norm_(actor.parameters(), cfg.max_grad_norm))
            actor_opt.step()
        return metrics

    per_batch = cfg.ppo_epochs * (cfg.frames_per_batch // cfg.ppo_minibatch_size)
    total_updates = math.ceil(cfg.total_frames / cfg.frames_per_batch) * per_batch

    def ppo_update(batch: TensorDictBase) -> dict[str, float]:
        """TorchRL's PPO on one batch; algo=stac corrects the actor's gradient on every minibatch."""
        logged = defaultdict(list)
        done_updates = (counters["iterations"] - 1) * per_batch
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
                    alpha = 1.0 - done_updates / total_updates if cfg.ppo_anneal else 1.0
                    for optimizer, lr in ((actor_opt, cfg.actor_lr), (critic_opt, cfg.critic_lr)):
                        for group in optimizer.param_groups:
                            group["lr"] = lr * alpha
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
        return metrics

    update = ppo_update if ppo else pg_update

    def evaluate_policy(seed: int) -> list[float]:
        """Deterministic returns; with observation statistics, in an env with a frozen copy of them."""
        env = make_env(cfg.env, 1, cfg.device, norm.frozen_copy()) if norm is not None else eval_env
        returns = evaluate(actor, env, cfg.eval_episodes, seed)
        if env is not eval_env:
            env.close()
        return returns

    def checkpoint() -> Path:
        return write_checkpoint(run_dir, stateful, counters, cfg, logger)

    tracker = RunTracker(cfg, counters, logger, timer, collector, evaluate_policy, checkpoint, f"{cfg.algo} {cfg.env}")
    tic = time.perf_counter()
    for batch in collector:  # collect frames_per_batch on-policy transitions
        timer.add("collect", time.perf_counter() - tic)
        if batch.batch_dims == 3:  # [workers, envs per worker, T] -> [num_envs, T]
            batch = batch.reshape(-1, batch.shape[-1])
        counters["frames"] += batch.numel()
        counters["iterations"] += 1
        metrics = update(batch)  # pg: the paper's Algorithm 1; ppo: TorchRL's PPO (+ the correction)

        tracker.after_batch(batch, metrics)  # log, evaluate, checkpoint
        tic = time.perf_counter()

    collector.shutdown()
    eval_env.close()  # the collector's shutdown closed the training envs
    summary = tracker.finish(run_dir)
    print(
        f"done: {cfg.algo} on {cfg.env}, seed {cfg.seed}: {summary['frames']} frames in "
        f"{summary['wall_seconds']:.1f} s, eval return {summary['eval_return_mean']:.1f} ± "
        f"{summary['eval_return_std']:.1f}; logs and checkpoints in {run_dir}"
    )
    return summary


@hydra.main(config_path=".", config_name="config_mujoco", version_base="1.3")
@recipe_cli.one_line_errors
def main(cfg: DictConfig) -> None:
    train(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    recipe_cli.run(main)
