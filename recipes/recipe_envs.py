"""Environments: checking an env id, building envs and collectors, deterministic evaluation."""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib.util
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from functools import partial

import gymnasium
import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import (
    ClipTransform,
    Compose,
    DoubleToFloat,
    EnvBase,
    ExplorationType,
    GymEnv,
    GymWrapper,
    InitTracker,
    RewardSum,
    StepCounter,
    TransformedEnv,
    VecNormV2,
    set_exploration_type,
)
from torchrl.envs.libs.envpool import MultiThreadedEnv
from torchrl.envs.libs.gym import _conversion_registry, register_gym_spec_conversion

from recipe_schema import ConfigError


def check_env(env_id: str, backend: str = "gymnasium") -> None:
    """The env must exist, build with the installed packages, and have the spaces the recipes use.

    Unknown ids get close matches; a missing package (MuJoCo, Box2D, ...) says what to install;
    the observation must be a flat ``Box`` (a vector) and the actions ``Box`` or ``Discrete``.
    Evaluation always runs the Gymnasium env, so ``backend="envpool"`` needs both builds.
    """
    if backend == "envpool":
        check_envpool(env_id)
    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"env={env_id!r}: unknown Gymnasium environment.{hint}")
    if "mujoco" in str(gymnasium.registry[env_id].entry_point) and importlib.util.find_spec("mujoco") is None:
        raise ConfigError(f"env={env_id!r} needs MuJoCo: pip install 'gymnasium[mujoco]'.")
    try:
        env = gymnasium.make(env_id)
    except gymnasium.error.DependencyNotInstalled as error:
        raise ConfigError(f"env={env_id!r} needs a package that is not installed: {error}") from None
    observation, action = env.observation_space, env.action_space
    env.close()
    if not isinstance(observation, gymnasium.spaces.Box) or len(observation.shape) != 1:
        raise ConfigError(
            f"env={env_id!r} observes {observation}; the recipes need a flat Box observation (a vector of floats)."
        )
    if not isinstance(action, gymnasium.spaces.Box | gymnasium.spaces.Discrete):
        raise ConfigError(f"env={env_id!r} acts in {action}; the recipes need Box or Discrete actions.")


def check_envpool(env_id: str) -> None:
    """``env_backend=envpool`` needs envpool (and the gym/treevalue packages TorchRL's wrapper imports)
    and an envpool build of the task."""
    missing = [name for name in ("envpool", "gym", "treevalue") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"env_backend=envpool needs {', '.join(missing)}: pip install -e '.[envpool]' (or env_backend=gymnasium)."
        )
    import envpool

    if env_id not in envpool.list_all_envs():
        close = difflib.get_close_matches(env_id, envpool.list_all_envs(), n=3, cutoff=0.6)
        hint = f" Close: {', '.join(close)}." if close else ""
        raise ConfigError(f"env={env_id!r} has no envpool build; use env_backend=gymnasium.{hint}")


class EnvPoolEnv(MultiThreadedEnv):
    """TorchRL's envpool env (``MultiThreadedEnv``, envpool's C++ thread pool), with four fixes for
    torchrl 0.14.1 + envpool 1.2.5.

    * envpool 1.2.5 describes its spaces with gymnasium classes, while TorchRL converts them with the
      gym backend: gymnasium's ``Box`` is registered with TorchRL's own ``Box`` conversion.
    * The wrapper's reward and done entries are ``[num_envs]``; TorchRL's Gymnasium envs, its
      transforms (``InitTracker``) and value estimators use ``[num_envs, 1]``: they get that shape.
    * The wrapper returns its observation buffer itself as the step's output and later writes the
      partial resets of finished envs into that buffer, which overwrote the final ``next``
      observation of every finished episode: the wrapper keeps a copy instead.
    * envpool takes int32 seeds (env ``i`` of the pool gets ``seed + i``), while TorchRL chains 32-bit
      unsigned seeds across collector workers: seeds are folded into ``[0, 2**31 - num_envs)``.
    """

    def __init__(self, num_workers: int, env_name: str, **kwargs) -> None:
        register_gym_spec_conversion(gymnasium.spaces.Box)(_conversion_registry["Box"])
        super().__init__(num_workers, env_name, **kwargs)

    def _make_specs(self, env) -> None:
        super()._make_specs(env)
        shape = (*self.batch_size, 1)
        self.reward_spec = Unbounded(shape=shape, dtype=self.reward_spec.dtype, device=self.device)
        flag = Categorical(2, shape=shape, dtype=torch.bool, device=self.device)
        self.done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=self.batch_size, device=self.device
        )

    def _set_seed(self, seed: int | None) -> None:
        super()._set_seed(None if seed is None else seed % (2**31 - self.num_workers))

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if tensordict is not None and "_reset" in tensordict.keys():  # [num_envs, 1] -> the wrapper's [num_envs]
            tensordict = tensordict.clone(False).set("_reset", tensordict["_reset"].reshape(self.batch_size))
        return super()._reset(tensordict, **kwargs)

    def _transform_step_output(self, envpool_output) -> TensorDictBase:
        output = super()._transform_step_output(envpool_output)
        for key in ("reward", "done", "terminated", "truncated"):
            output[key] = torch.as_tensor(output[key]).reshape(*self.batch_size, 1)
        self.obs = output.select(*self.observation_spec.keys(True, True)).clone()
        return output


def make_env(
    env_id: str,
    num_envs: int = 1,
    device: str = "cpu",
    observation_norm: VecNormV2 | bool = False,
    backend: str = "gymnasium",
) -> TransformedEnv:
    """A Gymnasium (or envpool) env with counters and sums; batch ``[num_envs]`` when num_envs > 1.

    ``backend="gymnasium"``: several envs are stepped in this process by one gymnasium ``SyncVectorEnv``
    (one policy call per step for all of them); its auto-reset is disabled so that torchrl resets
    finished envs itself. ``backend="envpool"``: envpool's build of the task steps the ``num_envs``
    envs in C++ threads (:class:`EnvPoolEnv`); finished envs are reset by torchrl as well.
    ``observation_norm``: ``True`` adds a fresh running normalisation (``VecNormV2``, one set of
    statistics for all envs) and a clip to ±10, as TorchRL's PPO recipe does; a ``VecNormV2``
    instance is used as it is (e.g. a frozen copy of the training env's for evaluation); ``False``:
    raw observations.
    """
    if backend == "envpool":
        base = EnvPoolEnv(num_envs, env_id, device=device)
    elif num_envs > 1:
        vector_env = gymnasium.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.DISABLED},
        )
        base = GymWrapper(vector_env, device=device)
    else:
        base = GymEnv(env_id, device=device)
    transforms = [DoubleToFloat(), StepCounter(), InitTracker(), RewardSum()]
    if observation_norm is not False:
        norm = observation_norm
        if norm is True:
            norm = VecNormV2(in_keys=["observation"], decay=0.99999, eps=1e-2, reduce_batch_dims=True)
        transforms += [norm, ClipTransform(in_keys=["observation"], low=-10, high=10)]
    return TransformedEnv(base, Compose(*transforms))


def frozen_observation_norm(state_dict: dict) -> VecNormV2:
    """A frozen normalisation with a checkpoint's statistics (for evaluating a saved policy)."""
    norm = VecNormV2(in_keys=["observation"], decay=0.99999, eps=1e-2, reduce_batch_dims=True)
    norm.load_state_dict(state_dict)
    return norm.frozen_copy()


def observation_norm(env: TransformedEnv) -> VecNormV2 | None:
    """The env's running observation normalisation, if it has one."""
    return next((t for t in env.transform if isinstance(t, VecNormV2)), None)


def make_collector(
    env_id: str,
    actor,
    *,
    frames_per_batch: int,
    total_frames: int,
    num_envs: int = 1,
    workers: int = 1,
    device: str = "cpu",
    backend: str = "gymnasium",
    env: TransformedEnv | None = None,
) -> Collector | MultiSyncCollector:
    """A collector in this process (``workers=1``: ``env``, or ``num_envs`` fresh envs), or ``workers``
    processes splitting ``num_envs``.

    Episodes run on across batches. With several workers, each holds a copy of the actor refreshed
    before every batch and the batch is stacked ``[workers, num_envs / workers, T]``.
    """
    if workers == 1:
        env = env if env is not None else make_env(env_id, num_envs, device, backend=backend)
        return Collector(env, actor, frames_per_batch=frames_per_batch, total_frames=total_frames, device=device)
    worker_env = partial(make_env, env_id, num_envs // workers, device, backend=backend)
    with standard_start_method(), signals_left_to_this_process():  # the workers start in the constructor
        return MultiSyncCollector(
            [worker_env] * workers,
            actor,
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            device=device,
            cat_results="stack",
            update_at_each_batch=True,  # on-policy: workers act with the weights of the latest actor step
            num_threads=torch.get_num_threads(),  # keep this process's threads for the update
        )


@contextlib.contextmanager
def signals_left_to_this_process() -> Iterator[None]:
    """Block SIGINT and SIGTERM while worker processes start: they inherit the mask, so a terminal's
    Ctrl-C (sent to the whole process group) reaches only this process, which stops them. A signal
    that arrives meanwhile is delivered here on exit."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def standard_start_method() -> Iterator[None]:
    """Start processes with one of Python's own start methods.

    Inside a joblib (loky) worker, as in a ``hydra/launcher=joblib`` sweep, the global start method is
    loky's, whose process launcher TorchRL's worker class does not support (``'_ProcessNoWarn' object
    has no attribute 'env'``): collector workers are spawned instead, and the global method restored.
    """
    current = multiprocessing.get_start_method(allow_none=True)
    if current in (None, *multiprocessing.get_all_start_methods()):
        yield
        return
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(current, force=True)


def onpolicy_collector(
    cfg: DictConfig, actor, total_frames: int, saved_norm: dict | None
) -> tuple[Collector | MultiSyncCollector, VecNormV2 | None]:
    """The on-policy recipes' collector and, with ``normalize_observations``, its running observation
    statistics (training state: empty, or ``saved_norm`` on resume).

    With one worker the training envs live in this process (so do the statistics).
    """
    train_env = None
    if cfg.collector_workers == 1:
        train_env = make_env(cfg.env, cfg.num_envs, cfg.device, cfg.normalize_observations, cfg.env_backend)
    norm = observation_norm(train_env) if train_env is not None else None
    empty_norm = copy.deepcopy(norm.state_dict()) if norm is not None else None
    collector = make_collector(
        cfg.env,
        actor,
        frames_per_batch=cfg.frames_per_batch,
        total_frames=total_frames,
        num_envs=cfg.num_envs,
        workers=cfg.collector_workers,
        device=cfg.device,
        backend=cfg.env_backend,
        env=train_env,
    )
    if norm is not None:  # building the collector reset the env once, unseeded: start again from the statistics
        norm.load_state_dict(saved_norm if saved_norm is not None else empty_norm)
    return collector, norm


def policy_evaluator(
    actor, eval_env: EnvBase, cfg: DictConfig, norm: VecNormV2 | None = None
) -> Callable[[int], list[float]]:
    """``seed -> returns`` of ``cfg.eval_episodes`` deterministic episodes; with observation
    statistics, in a fresh env holding a frozen copy of them."""

    def evaluate_policy(seed: int) -> list[float]:
        env = make_env(cfg.env, 1, cfg.device, norm.frozen_copy()) if norm is not None else eval_env
        returns = evaluate(actor, env, cfg.eval_episodes, seed)
        if env is not eval_env:
            env.close()
        return returns

    return evaluate_policy


def start_fresh_episodes(collector: Collector | MultiSyncCollector, seed: int) -> None:
    """Seed the collector's envs (and its workers' torch/numpy RNGs) and reset every env."""
    collector.set_seed(seed)
    collector.reset()


def evaluate(actor, env: EnvBase, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` full episodes with the deterministic policy (the distribution's
    deterministic sample); episode ``i`` is seeded ``seed + i``."""
    returns = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for episode in range(episodes):
            env.set_seed(seed + episode)
            rollout = env.rollout(max_steps=100_000, policy=actor, break_when_any_done=True)
            returns.append(float(rollout["next", "reward"].sum()))
    return returns
