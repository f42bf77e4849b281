"""Shared pieces of the STAC/AC recipes: config checks, envs, models, losses, checkpoints, the loop.

The loop (one iteration per collected batch, as in the paper):
collect → Monte-Carlo critic targets and GAE advantages → k critic steps → actor loss backward →
ImplicitGradientHook (``algo=stac`` only) → actor step.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import random
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import Categorical, LazyTensorStorage, OneHot, ReplayBuffer
from torchrl.data.replay_buffers import SamplerWithoutReplacement
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    ExplorationType,
    GymEnv,
    GymWrapper,
    InitTracker,
    RewardSum,
    StepCounter,
    TransformedEnv,
    set_exploration_type,
)
from torchrl.modules import MLP, OneHotCategorical, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.record.loggers import get_logger
from tqdm import tqdm

from torchrl_stac import CriticLoss, ImplicitGradientHook, StackelbergActorLoss

LOGGERS = ("csv", "tensorboard", "wandb", "none")
CHECKPOINT_NAME = "checkpoint.pt"


class ConfigError(ValueError):
    """A configuration that cannot train; the message says what to change."""


# --------------------------------------------------------------------------- config checks
def check_config(cfg: DictConfig) -> dict[str, Any] | None:
    """Reject bad input before anything is built; returns the checkpoint to resume from, if any."""
    if cfg.algo not in ("stac", "ac"):
        raise ConfigError(f"algo={cfg.algo!r}: choose 'stac' or 'ac'.")
    for name in ("critic_steps", "frames_per_batch", "total_frames", "num_envs", "collector_workers"):
        if int(cfg[name]) < 1:
            raise ConfigError(f"{name}={cfg[name]} must be >= 1.")
    if cfg.frames_per_batch % cfg.num_envs:
        raise ConfigError(f"frames_per_batch={cfg.frames_per_batch} must be a multiple of num_envs={cfg.num_envs}.")
    if cfg.num_envs % cfg.collector_workers:
        raise ConfigError(f"num_envs={cfg.num_envs} must be a multiple of collector_workers={cfg.collector_workers}.")
    if not math.isfinite(cfg.regularization) or cfg.regularization < 0:
        raise ConfigError(f"regularization={cfg.regularization} must be a finite number >= 0 (λ).")
    for name in ("actor_lr", "critic_lr"):
        if not cfg[name] > 0:
            raise ConfigError(f"{name}={cfg[name]} must be > 0.")
    if not 0 <= cfg.gamma <= 1 or not 0 <= cfg.gae_lambda <= 1:
        raise ConfigError(f"gamma={cfg.gamma} and gae_lambda={cfg.gae_lambda} must lie in [0, 1].")
    if cfg.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"optimizer={cfg.optimizer!r}: choose 'sgd' or 'adam'.")
    if str(cfg.logger) not in LOGGERS:
        raise ConfigError(f"logger={cfg.logger!r}: choose one of {LOGGERS}.")
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(cfg.logger)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"logger={cfg.logger} needs {package}: pip install {package}.")
    minibatch = cfg.critic_minibatch_size
    if minibatch is not None and not 1 <= minibatch <= cfg.frames_per_batch:
        raise ConfigError(f"critic_minibatch_size={minibatch} must be in [1, frames_per_batch] or null.")
    check_env_id(cfg.env)
    return load_checkpoint_for(cfg) if cfg.resume else None  # raises on a missing file or another env


def check_env_id(env_id: str) -> None:
    """Unknown ids get close matches; MuJoCo ids without mujoco say what to install."""
    import gymnasium

    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown Gymnasium environment {env_id!r}.{hint}")
    entry_point = str(gymnasium.registry[env_id].entry_point)
    if "mujoco" in entry_point and importlib.util.find_spec("mujoco") is None:
        raise ConfigError(f"{env_id} needs MuJoCo: pip install 'gymnasium[mujoco]'.")


# --------------------------------------------------------------------------- building blocks
def make_env(env_id: str, num_envs: int = 1, device: str = "cpu") -> TransformedEnv:
    """A Gymnasium env with counters and sums; batch ``[num_envs]`` when num_envs > 1.

    Several envs are stepped in this process by one gymnasium ``SyncVectorEnv`` (one policy call per
    step for all of them); its auto-reset is disabled so that torchrl resets finished envs itself.
    """
    if num_envs > 1:
        import gymnasium

        vector_env = gymnasium.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.DISABLED},
        )
        base = GymWrapper(vector_env, device=device)
    else:
        base = GymEnv(env_id, device=device)
    return TransformedEnv(base, Compose(DoubleToFloat(), StepCounter(), InitTracker(), RewardSum()))


def make_collector(cfg: DictConfig, actor, total_frames: int) -> Collector | MultiSyncCollector:
    """On-policy collector: in this process, or ``collector_workers`` processes splitting ``num_envs``.

    Episodes run on across batches (a batch's last step bootstraps from the critic). With several
    workers, each holds a copy of the actor refreshed before every batch and the batch is stacked
    ``[workers, num_envs / workers, T]``.
    """
    if cfg.collector_workers == 1:
        env = make_env(cfg.env, cfg.num_envs, cfg.device)
        return Collector(
            env, actor, frames_per_batch=cfg.frames_per_batch, total_frames=total_frames, device=cfg.device
        )
    worker_env = partial(make_env, cfg.env, cfg.num_envs // cfg.collector_workers, cfg.device)
    return MultiSyncCollector(
        [worker_env] * cfg.collector_workers,
        actor,
        frames_per_batch=cfg.frames_per_batch,
        total_frames=total_frames,
        device=cfg.device,
        cat_results="stack",
        update_at_each_batch=True,  # on-policy: workers act with the weights of the latest actor step
        num_threads=torch.get_num_threads(),  # keep this process's threads for the update
    )


def start_fresh_episodes(collector: Collector | MultiSyncCollector, seed: int) -> None:
    """Seed the collector's envs (and its workers' torch/numpy RNGs) and reset every env."""
    collector.set_seed(seed)
    collector.reset()


def make_models(env, cells: list[int], device: str) -> tuple[ProbabilisticActor, ValueOperator]:
    """Tanh MLP actor (TanhNormal, or OneHotCategorical for discrete actions) and V critic."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec_unbatched
    discrete = isinstance(action_spec, (OneHot, Categorical))
    if isinstance(action_spec, Categorical):
        raise ConfigError("use one-hot action encoding (GymEnv's default) for discrete actions.")
    act_dim = action_spec.shape[-1]
    if discrete:
        net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=list(cells), activation_class=nn.Tanh)
        module = TensorDictModule(net, ["observation"], ["logits"])
        actor = ProbabilisticActor(
            module, in_keys=["logits"], spec=action_spec, distribution_class=OneHotCategorical, return_log_prob=True
        )
    else:
        net = nn.Sequential(
            MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=list(cells), activation_class=nn.Tanh),
            NormalParamExtractor(),
        )
        module = TensorDictModule(net, ["observation"], ["loc", "scale"])
        actor = ProbabilisticActor(
            module,
            in_keys=["loc", "scale"],
            spec=action_spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high},
            return_log_prob=True,
        )
    critic = ValueOperator(
        MLP(in_features=obs_dim, out_features=1, num_cells=list(cells), activation_class=nn.Tanh),
        in_keys=["observation"],
    )
    return actor.to(device), critic.to(device)


def make_losses(cfg: DictConfig, actor, critic):
    """CriticLoss on Monte-Carlo returns, StackelbergActorLoss on GAE, and the hook for algo=stac."""
    critic_loss = CriticLoss(critic).make_value_estimator(gamma=cfg.gamma)  # TD(1): MC returns
    actor_loss = StackelbergActorLoss(
        actor, critic, entropy_coeff=cfg.entropy_coeff, normalize_advantage=cfg.normalize_advantage
    )
    actor_loss.make_value_estimator(gamma=cfg.gamma, lmbda=cfg.gae_lambda)
    actor_loss.set_keys(value_target="gae_target")  # keep the critic's MC targets in value_target
    hook = None
    if cfg.algo == "stac":
        hook = ImplicitGradientHook(
            actor_loss,
            critic_loss,
            regularization=cfg.regularization,
            max_iter=cfg.cg_iterations,
            hessian=cfg.hessian,
            curvature_fallback=cfg.curvature_fallback,
            start_states=cfg.start_states,
            on_nonfinite="skip",
        )
    return actor_loss, critic_loss, hook


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr)


# --------------------------------------------------------------------------- checkpoints
def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then rename: never a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(location: str, key: str) -> dict[str, Any]:
    """The checkpoint in a run directory or at a ``checkpoint.pt`` path (``key`` names the override)."""
    path = Path(location)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(f"{key}={location}: no checkpoint there.")
    return torch.load(path, weights_only=False)


def load_checkpoint_for(cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint to resume ``cfg`` from; it must have been trained on the same env."""
    state = load_checkpoint(cfg.resume, "resume")
    if state["config"]["env"] != cfg.env:
        raise ConfigError(
            f"resume={cfg.resume} was trained on {state['config']['env']}, not env={cfg.env}: "
            f"pass env={state['config']['env']} or start a fresh run."
        )
    return state


# --------------------------------------------------------------------------- evaluation
def evaluate(actor, env, episodes: int, seed: int) -> list[float]:
    """Deterministic-policy returns of ``episodes`` full episodes."""
    returns = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for episode in range(episodes):
            env.set_seed(seed + episode)
            rollout = env.rollout(max_steps=100_000, policy=actor, break_when_any_done=True)
            returns.append(float(rollout["next", "reward"].sum()))
    return returns


# --------------------------------------------------------------------------- training
def episode_returns(batch: TensorDictBase) -> torch.Tensor:
    """Returns of the episodes that ended in this batch (RewardSum's episode_reward at done)."""
    done = batch["next", "done"].squeeze(-1)
    return batch["next", "episode_reward"].squeeze(-1)[done]


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured training; returns a summary. ``run_dir`` receives logs and checkpoints."""
    resume_state = check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    device = cfg.device
    eval_env = make_env(cfg.env, 1, device)
    actor, critic = make_models(eval_env, cfg.num_cells, device)
    actor_loss, critic_loss, hook = make_losses(cfg, actor, critic)
    actor_opt = make_optimizer(cfg.optimizer, actor.parameters(), cfg.actor_lr)
    critic_opt = make_optimizer(cfg.optimizer, critic.parameters(), cfg.critic_lr)
    counters = {"frames": 0, "iterations": 0, "evaluations": 0}
    if resume_state is not None:
        state = resume_state
        actor.load_state_dict(state["actor"])
        critic.load_state_dict(state["critic"])
        actor_opt.load_state_dict(state["actor_optimizer"])
        critic_opt.load_state_dict(state["critic_optimizer"])
        if hook is not None and state["hook"] is not None:
            hook.load_state_dict(state["hook"])
        counters = dict(state["counters"])
        set_rng_state(state["rng"])

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    logger = None
    if cfg.logger != "none":
        logger = get_logger(cfg.logger, logger_name=str(run_dir), experiment_name="logs", project="torchrl-stac")

    def log(values: dict[str, float]) -> None:
        if logger is not None:
            for name, value in values.items():
                logger.log_scalar(name, float(value), step=counters["frames"])

    def checkpoint() -> Path:
        path = run_dir / CHECKPOINT_NAME
        save_checkpoint(
            path,
            {
                "actor": actor.state_dict(),
                "critic": critic.state_dict(),
                "actor_optimizer": actor_opt.state_dict(),
                "critic_optimizer": critic_opt.state_dict(),
                "hook": hook.state_dict() if hook is not None else None,
                "counters": dict(counters),
                "rng": rng_state(),
                "config": OmegaConf.to_container(cfg, resolve=True),
            },
        )
        return path

    remaining = cfg.total_frames - counters["frames"]
    if remaining <= 0:
        raise ConfigError(f"the run already has {counters['frames']} frames >= total_frames={cfg.total_frames}.")
    iterations = math.ceil(remaining / cfg.frames_per_batch)
    collector = make_collector(cfg, actor, iterations * cfg.frames_per_batch)
    rb = None
    if cfg.critic_minibatch_size is not None:
        rb = ReplayBuffer(
            storage=LazyTensorStorage(cfg.frames_per_batch),
            sampler=SamplerWithoutReplacement(),
            batch_size=cfg.critic_minibatch_size,
        )
    progress = tqdm(total=cfg.total_frames, initial=counters["frames"], unit="frames", desc=f"{cfg.algo} {cfg.env}")
    recent_returns: list[float] = []
    last_eval: list[float] = []
    phase = defaultdict(float)
    phase_totals = defaultdict(float)
    start_wall = time.perf_counter()
    next_eval = (counters["frames"] // cfg.eval_interval + 1) * cfg.eval_interval
    next_checkpoint = (counters["frames"] // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval

    # Fresh, seeded episodes at the start and after every checkpoint: a run resumed from a checkpoint
    # is bit-identical to the uninterrupted run.
    start_fresh_episodes(collector, cfg.seed + 1_000 * counters["iterations"])
    tic = time.perf_counter()
    for batch in collector:
        phase["collect"] = time.perf_counter() - tic
        if batch.batch_dims == 3:  # [workers, envs per worker, T] -> [num_envs, T]
            batch = batch.reshape(-1, batch.shape[-1])
        counters["frames"] += batch.numel()
        counters["iterations"] += 1
        metrics = update(batch, actor_loss, critic_loss, hook, actor_opt, critic_opt, cfg, rb, phase)
        finished = episode_returns(batch)
        if finished.numel():
            recent_returns = (recent_returns + finished.tolist())[-20:]
            metrics["train/episode_return"] = float(finished.mean())
        for name, seconds in phase.items():
            metrics[f"time/{name}"] = seconds
            phase_totals[name] += seconds
        if counters["frames"] >= next_eval or counters["frames"] >= cfg.total_frames:
            last_eval = evaluate(actor, eval_env, cfg.eval_episodes, cfg.seed + 10_000 * (1 + counters["evaluations"]))
            counters["evaluations"] += 1
            metrics["eval/return_mean"] = float(np.mean(last_eval))
            metrics["eval/return_std"] = float(np.std(last_eval))
            next_eval += cfg.eval_interval
        log(metrics)
        if counters["frames"] >= next_checkpoint or counters["frames"] >= cfg.total_frames:
            checkpoint()
            next_checkpoint += cfg.checkpoint_interval
            if counters["frames"] < cfg.total_frames:
                start_fresh_episodes(collector, cfg.seed + 1_000 * counters["iterations"])
        progress.update(batch.numel())
        postfix = {"return": f"{np.mean(recent_returns):.1f}" if recent_returns else "-"}
        if last_eval:
            postfix["eval"] = f"{np.mean(last_eval):.1f}"
        progress.set_postfix(postfix)
        tic = time.perf_counter()
    collector.shutdown()
    progress.close()
    path = checkpoint()
    wall = time.perf_counter() - start_wall
    summary = {
        "env": cfg.env,
        "algo": cfg.algo,
        "seed": cfg.seed,
        "frames": counters["frames"],
        "wall_seconds": wall,
        "eval_return_mean": float(np.mean(last_eval)) if last_eval else float("nan"),
        "eval_return_std": float(np.std(last_eval)) if last_eval else float("nan"),
        "checkpoint": str(path),
        "phase_seconds": dict(phase_totals),
    }
    print(
        f"done: {cfg.algo} on {cfg.env}, seed {cfg.seed}: {counters['frames']} frames in {wall:.1f} s, "
        f"eval return {summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f}; "
        f"logs and checkpoint in {run_dir}"
    )
    eval_env.close()  # the collector's shutdown closed the training envs
    return summary


def update(batch, actor_loss, critic_loss, hook, actor_opt, critic_opt, cfg, rb, phase) -> dict[str, float]:
    """One STAC/AC iteration on a collected batch; fills ``phase`` with seconds per phase."""
    tic = time.perf_counter()
    with torch.no_grad():
        critic_loss.value_estimator(batch)  # Monte-Carlo returns (bootstrapped at truncation)
        actor_loss.value_estimator(batch)  # GAE advantages with the critic before the inner loop
    if rb is not None:
        rb.empty()
        rb.extend(batch.reshape(-1))
    for _ in range(cfg.critic_steps):
        critic_opt.zero_grad()
        sample = rb.sample() if rb is not None else batch
        loss_critic = critic_loss(sample)["loss_critic"]
        loss_critic.backward()
        critic_opt.step()
    phase["critic"] = time.perf_counter() - tic

    tic = time.perf_counter()
    actor_opt.zero_grad()
    losses = actor_loss(batch)
    objective = losses["loss_objective"] + losses.get("loss_entropy", 0.0)
    objective.backward()
    phase["actor"] = time.perf_counter() - tic
    metrics = {"loss/critic": loss_critic.item(), "loss/objective": losses["loss_objective"].item()}
    tic = time.perf_counter()
    if hook is not None:
        diagnostics = hook(batch)
        metrics.update({f"implicit/{k}": float(v) for k, v in diagnostics.items()})
    phase["implicit"] = time.perf_counter() - tic
    tic = time.perf_counter()
    if cfg.max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(actor_loss.actor_network.parameters(), cfg.max_grad_norm)
        metrics["actor_grad_norm"] = float(norm)
    actor_opt.step()
    phase["actor"] += time.perf_counter() - tic
    return metrics


def load_config(config_name: str, overrides: list[str]) -> DictConfig:
    """``recipes/<config_name>.yaml`` with command-line-style overrides, outside a Hydra app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def hydra_entry_point(config_name: str):
    """The recipes' ``main``: Hydra config from ``recipes/<config_name>.yaml``, one-line errors."""

    @hydra.main(config_path=str(Path(__file__).resolve().parent), config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        try:
            train(cfg, Path(HydraConfig.get().runtime.output_dir))
        except ConfigError as error:
            sys.exit(f"error: {error}")

    return main
