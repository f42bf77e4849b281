"""The recipes' configuration schema: every key with its type, default and allowed values.

One dataclass per recipe, each a Hydra structured config in Hydra's ConfigStore: ``StacConfig``
(``stac_schema``; presets ``config_mujoco.yaml``, ``config_cartpole.yaml``), ``StppoConfig``
(``stppo_schema``; ``config_stppo.yaml``), ``StsacConfig`` (``stsac_schema``; ``config_stsac.yaml``)
and ``EvaluateConfig``. Hydra rejects a value of
the wrong type (``critic_steps=1.5``) or an unknown key while composing; :func:`validate` then
checks ranges, choices and the rules that tie keys together. Both end in one line naming the key,
the value and what is allowed (see ``recipe_cli.py``).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from torchrl_stac.offpolicy_update import default_hessian


class ConfigError(ValueError):
    """A configuration that cannot train; the message says what to change."""


MAX_SEED = 2**31 - 1  # numpy takes seeds below 2**32; runs add offsets to theirs (episodes, evaluations)


def _key(
    default: Any,
    *,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    hint: str | None = None,
) -> Any:
    """A schema field: ``choices``, or bounds ``low <= value <= high`` / ``value > above``; ``hint``:
    what a required key (default ``???``) expects, or what an optional key's null means."""
    metadata = {"choices": choices, "low": low, "high": high, "above": above, "hint": hint}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class OnPolicyConfig:
    """The keys the paper's loop and PPO share. Defaults: the paper's Figure 1 MuJoCo settings."""

    env: str = "Hopper-v4"  # any Gymnasium id with a flat Box observation and Box or Discrete actions
    seed: int = _key(0, low=0, high=MAX_SEED)  # seeds torch, numpy, python and the envs
    algo: str = _key("stac", choices=("stac", "ac"))  # ac: the same run without the correction
    total_frames: int = _key(1_000_000, low=1)  # environment steps to train for
    frames_per_batch: int = _key(4000, low=1)  # env steps per collected batch
    num_envs: int = _key(32, low=1)  # envs stepped together; batches of shape [num_envs, T]
    collector_workers: int = _key(2, low=1)  # processes splitting num_envs; 1: in this process
    env_backend: str = _key("gymnasium", choices=("gymnasium", "envpool"))  # envpool: C++ threads (training envs)
    regularization: float = _key(500.0, low=0.0)  # λ (at the first update, when it decays)
    # exp: λ halves every half-life; condition: λ from the critic Hessian's spectrum, cond(H + λI) <= κ
    regularization_decay: str = _key("none", choices=("none", "exp", "condition"))
    regularization_half_life: float = _key(100.0, above=0.0)  # in actor updates (batches)
    regularization_floor: float = _key(0.0, low=0.0)  # λ decays towards this value (condition: λ >= it)
    regularization_scale: str = _key("absolute", choices=("absolute", "trace"))  # trace: λ × tr(H)/n
    condition_number: float = _key(100.0, above=1.0)  # κ of regularization_decay=condition
    eigenvalue_every: int = _key(1, low=1)  # condition: Lanczos re-estimate every n corrections
    correction_max_ratio: float | None = _key(None, above=0.0, hint="null: off")  # ‖correction‖ <= ρ‖partial gradient‖
    actor_lr: float = _key(0.05, above=0.0)  # αθ (paper, Figure 1)
    critic_lr: float = _key(0.01, above=0.0)  # αw (paper, Figure 1)
    optimizer: str = _key("sgd", choices=("sgd", "adam"))  # sgd: the paper's plain gradient steps
    gamma: float = _key(0.99, low=0.0, high=1.0)
    gae_lambda: float = _key(0.95, low=0.0, high=1.0)  # GAE for the actor's advantages
    max_grad_norm: float | None = _key(1.0, above=0.0, hint="null: off")  # clip the actor's total gradient
    entropy_coeff: float | None = _key(None, low=0.0, hint="null: off")  # no entropy bonus in the paper
    cg_iterations: int = _key(10, low=1)  # CG iterations of the solve (H + λI) x = b
    hessian: str = _key("exact", choices=("exact", "gauss_newton"))  # critic Hessian in the solve
    curvature_fallback: str | None = _key("gauss_newton", choices=("gauss_newton", None))
    start_states: str = _key("all", choices=("all", "initial"))
    num_cells: list[int] = _key([64, 64], low=1)  # tanh MLPs for actor and critic (paper)
    normalize_observations: bool = False  # running mean/std of observations (VecNorm), clipped to ±10
    eval_interval: int = _key(20_000, low=1)  # frames between deterministic evaluations
    eval_episodes: int = _key(5, low=1)
    checkpoint_interval: int = _key(100_000, low=1)  # frames between checkpoints (the last two kept)
    resume: str | None = None  # a run directory (continues in it), one of its checkpoint files, or auto (sweeps)
    logger: str = _key("csv", choices=("csv", "tensorboard", "wandb", "none"))
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1, ...
    threads: int = _key(0, low=0)  # torch threads; 0 keeps torch's default


@dataclass
class StacConfig(OnPolicyConfig):
    """STAC / AC: the paper's Algorithm 1 (``recipes/stac_mujoco.py``)."""

    critic_steps: int = _key(80, low=1)  # k, unrolled critic steps per batch (paper: k in {1, 80})
    critic_minibatch_size: int | None = _key(None, low=1, hint="null: full-batch critic steps (paper)")
    normalize_advantage: bool = True  # Â / std(Â): scale-free actor learning rates


@dataclass
class StppoConfig(OnPolicyConfig):
    """Stackelberg-PPO / PPO (``recipes/stppo_mujoco.py``): TorchRL's MuJoCo PPO settings."""

    frames_per_batch: int = _key(2048, low=1)
    num_envs: int = _key(8, low=1)  # TorchRL steps one env; 8 in-process envs (T = 256) collect the same 2048 faster
    collector_workers: int = _key(1, low=1)  # the observation statistics live in the training env
    normalize_observations: bool = True
    optimizer: str = _key("adam", choices=("sgd", "adam"))  # Adam(eps=1e-5), one per player
    actor_lr: float = _key(3e-4, above=0.0)
    critic_lr: float = _key(3e-4, above=0.0)
    max_grad_norm: float | None = _key(0.5, above=0.0, hint="null: off")  # PPO's usual clip (baselines, SB3, CleanRL)
    regularization: float = _key(1e6, low=0.0)  # λ relative to the critic Hessian's mean diagonal (benchmarked)
    regularization_scale: str = _key("trace", choices=("absolute", "trace"))
    ppo_epochs: int = _key(10, low=1)  # passes over each batch
    ppo_minibatch_size: int = _key(64, low=1)  # steps per minibatch
    ppo_clip_epsilon: float = _key(0.2, above=0.0)  # ClipPPOLoss's ε
    ppo_critic_coef: float = _key(0.25, above=0.0)  # weight of the l2 value loss
    ppo_anneal: bool = True  # learning rates decay linearly to 0 over the run (ε stays)


@dataclass
class StsacConfig:
    """Stackelberg SAC, TD3, DDPG (``algo=stsac|sttd3|stddpg``) or their bases (``algo=sac|td3|ddpg``).

    Defaults: Tianshou's MuJoCo settings (its ``mujoco_sac.py``, ``mujoco_td3.py``, ``mujoco_ddpg.py``),
    whose published SAC returns the base is held to, with its schedule of one update after every env step
    (on Hopper-v4, 50 updates after every 50 steps fell back from its peaks: benchmarks/RESULTS.md).
    """

    env: str = "Hopper-v4"  # any Gymnasium id with a flat Box observation and Box actions
    seed: int = _key(0, low=0, high=MAX_SEED)
    # sac, td3, ddpg: each player's own gradient; stsac, sttd3, stddpg: the leader's total derivative
    algo: str = _key("stsac", choices=("stsac", "sac", "sttd3", "td3", "stddpg", "ddpg"))
    leader: str = _key("actor", choices=("actor", "critic"))  # who follows the total derivative
    total_frames: int = _key(1_000_000, low=1)
    init_random_frames: int = _key(10_000, low=0)  # uniform random actions first (capped at 10% of the run)
    frames_per_batch: int = _key(1, low=1)  # env steps between rounds of updates (utd_ratio × this many)
    utd_ratio: float = _key(1.0, above=0.0)  # gradient updates per env step
    batch_size: int = _key(256, low=1)  # minibatch of both players' losses
    buffer_size: int = _key(1_000_000, low=1)
    num_cells: list[int] = _key([256, 256], low=1)  # ReLU MLPs (TorchRL's SAC)
    actor_lr: float | None = _key(None, above=0.0, hint="null: the base's own")  # Adam (OFFPOLICY_LEARNING_RATE)
    critic_lr: float | None = _key(None, above=0.0, hint="null: the base's own")
    alpha_lr: float = _key(3e-4, above=0.0)  # SAC's temperature, with fixed_alpha=false
    alpha_init: float = _key(0.2, above=0.0)  # SAC's entropy temperature α
    fixed_alpha: bool = True  # keep α at alpha_init; false: learn α towards −(action dims) entropy
    scale_lb: float = _key(1e-4, above=0.0)  # the actor's smallest standard deviation (before tanh)
    # the actor's standard deviation from its raw output: TorchRL's biased softplus (never below 0.01,
    # whatever scale_lb), or exp (SB3's and Tianshou's exp(log-std); with scale_lb=2e-9, their floor)
    scale_mapping: str = _key("biased_softplus_1.0", choices=("biased_softplus_1.0", "exp"))
    # torch: PyTorch's default (TorchRL's, SB3's and Tianshou's SAC); glorot: Glorot-uniform weights and
    # zero biases for the actor and the critics (the SAC authors')
    network_init: str = _key("torch", choices=("torch", "glorot"))
    update_order: str = _key("joint", choices=("joint", "critic_first"))  # critic_first: algo=sac, SB3's order
    reference_loss: bool = False  # algo=sac: TorchRL's own SACLoss in this loop (a check of the base)
    exploration_noise: float = _key(0.1, low=0.0)  # TD3/DDPG: Gaussian action noise while collecting
    policy_noise: float = _key(0.2, low=0.0)  # TD3: target smoothing σ
    noise_clip: float = _key(0.5, low=0.0)  # TD3: target smoothing clip c
    policy_delay: int = _key(2, low=1)  # TD3: actor and target updates every n critic updates (DDPG: 1)
    gamma: float = _key(0.99, low=0.0, high=1.0)
    tau: float = _key(0.005, above=0.0, high=1.0)  # target networks: Q̄ ← (1 − τ) Q̄ + τ Q per update
    regularization: float = _key(1.0, low=0.0)  # λ
    # exp: λ halves every half-life; condition: λ from the follower Hessian's spectrum, cond(H + λI) <= κ;
    # null: the leader's own (offpolicy_curvature)
    regularization_decay: str | None = _key(
        None, choices=(None, "none", "exp", "condition"), hint="null: the leader's own"
    )
    regularization_half_life: float = _key(100_000.0, above=0.0)  # in updates
    regularization_floor: float = _key(0.0, low=0.0)  # λ decays towards this value (condition: λ >= it)
    condition_number: float = _key(100.0, above=1.0)  # κ of regularization_decay=condition
    eigenvalue_every: int = _key(10, low=1)  # condition: Lanczos re-estimate every n corrections
    correction_max_ratio: float | None = _key(None, above=0.0, hint="null: off")  # ‖correction‖ <= ρ‖partial gradient‖
    cg_iterations: int = _key(3, low=1)  # warm-started from the previous correction's solution
    # gauss_newton: leader=actor only; fisher: leader=critic, algo=stsac (the policy's Fisher information);
    # null: the leader's own (offpolicy_curvature)
    hessian: str | None = _key(None, choices=(None, "exact", "gauss_newton", "fisher"), hint="null: the leader's own")
    curvature_fallback: str | None = _key("gauss_newton", choices=("gauss_newton", None))  # leader=actor only
    eigenvalue_steps: int = _key(0, low=0)  # Lanczos steps for the follower Hessian's extreme eigenvalues
    correction_every: int = _key(4, low=1)  # the Stackelberg correction on one update in n (plain SAC between)
    eval_interval: int = _key(10_000, low=1)
    eval_episodes: int = _key(5, low=1)
    log_interval: int = _key(1000, low=1)  # frames between rows of training metrics (means over them)
    checkpoint_interval: int = _key(50_000, low=1)  # checkpoints hold the replay buffer
    resume: str | None = None
    logger: str = _key("csv", choices=("csv", "tensorboard", "wandb", "none"))
    device: str = "cpu"
    threads: int = _key(0, low=0)


# Adam's learning rate for the actor and the critics of each off-policy base when actor_lr / critic_lr
# are null: Tianshou's MuJoCo settings for SAC and DDPG; for TD3 the same 1e-3, measured on
# HalfCheetah-v4 against Tianshou's and the TD3 authors' 3e-4 (benchmarks/RESULTS.md).
OFFPOLICY_LEARNING_RATE = {"sac": 1e-3, "td3": 1e-3, "ddpg": 1e-3}


def offpolicy_learning_rates(cfg: DictConfig) -> tuple[float, float]:
    """``(actor_lr, critic_lr)`` of the off-policy recipe: as configured, else the base's own."""
    own = OFFPOLICY_LEARNING_RATE[cfg.algo.removeprefix("st")]
    return (
        cfg.actor_lr if cfg.actor_lr is not None else own,
        cfg.critic_lr if cfg.critic_lr is not None else own,
    )


def offpolicy_curvature(cfg: DictConfig) -> tuple[str, str]:
    """``(hessian, regularization_decay)`` of the off-policy recipe: as configured, else the leader's own,
    the library's :func:`~torchrl_stac.offpolicy_update.default_hessian` (SAC's critic leader inverts
    the policy's Fisher information, every other leader the exact Hessian). A Fisher solve defaults to
    λ from the conditioning, an exact one to a constant λ."""
    own = default_hessian(cfg.leader, stochastic_actor=cfg.algo == "stsac")
    hessian = cfg.hessian if cfg.hessian is not None else own
    decay = cfg.regularization_decay
    return hessian, decay if decay is not None else ("condition" if hessian == "fisher" else "none")


def with_offpolicy_curvature(cfg: DictConfig) -> DictConfig:
    """``cfg`` with :func:`offpolicy_curvature` filled in, so that the run's saved config names the solve."""
    hessian, decay = offpolicy_curvature(cfg)
    return OmegaConf.merge(cfg, {"hessian": hessian, "regularization_decay": decay})


def offpolicy_warmup(init_random_frames: int, total_frames: int) -> int:
    """Frames of uniform random actions before the first update: ``init_random_frames``, capped at 10%
    of the run so that a short run still trains."""
    return min(init_random_frames, total_frames // 10)


@dataclass
class EvaluateConfig:
    """``recipes/evaluate.py``: deterministic returns of a saved run."""

    checkpoint: str = _key("???", hint="a run directory or one of its checkpoint files, e.g. checkpoint=runs/<run>")
    episodes: int = _key(10, low=1)
    seed: int = _key(12345, low=0, high=MAX_SEED)
    device: str = "cpu"
    env_backend: str = _key("gymnasium", choices=("gymnasium", "envpool"))  # the simulator to evaluate on


ConfigStore.instance().store(name="stac_schema", node=StacConfig)
ConfigStore.instance().store(name="stppo_schema", node=StppoConfig)
ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
ConfigStore.instance().store(name="stsac_schema", node=StsacConfig)

# Keys that may change on resume: they budget, log, save or place the run, not the experiment.
RESUME_MAY_CHANGE = frozenset(
    {
        "total_frames",
        "resume",
        "logger",
        "eval_interval",
        "eval_episodes",
        "log_interval",
        "checkpoint_interval",
        "threads",
        "device",
    }
)


def _schema_for(cfg: DictConfig) -> type:
    if "checkpoint" in cfg.keys():  # `in cfg` is False while checkpoint is still ??? (missing)
        return EvaluateConfig
    if "leader" in cfg:
        return StsacConfig
    return StppoConfig if "ppo_epochs" in cfg else StacConfig


def allowed(schema: type, name: str) -> str:
    """What ``name`` accepts, in words (for error messages)."""
    meta = next(f for f in fields(schema) if f.name == name).metadata
    note = f" ({meta['hint']})" if meta.get("hint") else ""
    if meta.get("choices"):
        return "one of " + ", ".join("null" if c is None else repr(c) for c in meta["choices"]) + note
    hint = typing.get_type_hints(schema)[name]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(t for t in typing.get_args(hint) if t is not type(None)) if optional else hint
    if typing.get_origin(base) is list:
        noun = "a non-empty list of integers"
    else:
        noun = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}[base]
    if meta.get("low") is not None and meta.get("high") is not None:
        noun += f" in [{meta['low']:g}, {meta['high']:{'d' if isinstance(meta['high'], int) else 'g'}}]"
    elif meta.get("low") is not None:
        noun += f" >= {meta['low']:g}"
    if meta.get("above") is not None:
        noun += f" > {meta['above']:g}"
    return ("null or " if optional else "") + noun + note


def _bad(schema: type, name: str, value: Any) -> ConfigError:
    shown = "null" if value is None else repr(value)
    return ConfigError(f"{name}={shown} is not allowed: expected {allowed(schema, name)}.")


def _in_range(value: Any, meta: dict) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if meta.get("low") is not None and value < meta["low"]:
        return False
    if meta.get("high") is not None and value > meta["high"]:
        return False
    return meta.get("above") is None or value > meta["above"]


def unknown_key(schema: type, name: str) -> ConfigError:
    close = difflib.get_close_matches(name, [f.name for f in fields(schema)], n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ConfigError(f"{name} is not a key of this recipe.{hint} `--cfg job` lists the keys.")


def validate(cfg: DictConfig) -> None:
    """Check every key against the schema and the cross-key rules; raises :class:`ConfigError`."""
    schema = _schema_for(cfg)
    names = {f.name for f in fields(schema)}
    for name in cfg:
        if name not in names:
            raise unknown_key(schema, str(name))
    for spec in fields(schema):
        if OmegaConf.is_missing(cfg, spec.name):
            raise ConfigError(f"{spec.name}= is required ({spec.metadata.get('hint') or allowed(schema, spec.name)}).")
        value = cfg[spec.name]
        if value is None:
            continue  # non-optional keys cannot be null: Hydra rejects that while composing
        meta = spec.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise _bad(schema, spec.name, value)
        items = list(value) if isinstance(value, ListConfig) else [value]
        if isinstance(value, ListConfig) and not items:
            raise _bad(schema, spec.name, list(value))
        if not all(isinstance(v, bool) or _in_range(v, meta) for v in items if not isinstance(v, str)):
            raise _bad(schema, spec.name, list(value) if isinstance(value, ListConfig) else value)
    check_device(cfg.device)
    if "logger" in cfg:
        check_logger(cfg.logger)
    if schema in (StacConfig, StppoConfig):
        _check_training_rules(cfg)
    if schema is StsacConfig and int(cfg.utd_ratio * cfg.frames_per_batch) < 1:
        raise ConfigError(
            f"utd_ratio={cfg.utd_ratio} × frames_per_batch={cfg.frames_per_batch} is less than one update per "
            "batch: SAC would never train. Raise utd_ratio or frames_per_batch."
        )
    if schema is StsacConfig and cfg.update_order == "critic_first" and cfg.algo != "sac":
        raise ConfigError("update_order=critic_first is a plain-SAC option: use algo=sac (or update_order=joint).")
    if schema is StsacConfig and cfg.reference_loss and (cfg.algo != "sac" or cfg.update_order != "joint"):
        raise ConfigError("reference_loss=true is TorchRL's plain SACLoss: use algo=sac update_order=joint.")
    if schema is StsacConfig and cfg.leader == "critic" and cfg.hessian == "gauss_newton":
        raise ConfigError(
            "leader=critic inverts the actor's Hessian, which has no Gauss-Newton form: hessian=exact or fisher."
        )
    if schema is StsacConfig and cfg.hessian == "fisher" and (cfg.leader != "critic" or cfg.algo != "stsac"):
        raise ConfigError("hessian=fisher is the curvature of SAC's actor as the follower: algo=stsac leader=critic.")


def _check_training_rules(cfg: DictConfig) -> None:
    if cfg.frames_per_batch % cfg.num_envs:
        raise ConfigError(f"frames_per_batch={cfg.frames_per_batch} must be a multiple of num_envs={cfg.num_envs}.")
    if cfg.num_envs % cfg.collector_workers:
        raise ConfigError(f"num_envs={cfg.num_envs} must be a multiple of collector_workers={cfg.collector_workers}.")
    if cfg.get("critic_minibatch_size") is not None and cfg.critic_minibatch_size > cfg.frames_per_batch:
        raise ConfigError(
            f"critic_minibatch_size={cfg.critic_minibatch_size} must be <= frames_per_batch={cfg.frames_per_batch}."
        )
    if cfg.regularization_decay == "exp" and cfg.regularization_floor > cfg.regularization:
        raise ConfigError(
            f"regularization_floor={cfg.regularization_floor} must be <= regularization={cfg.regularization} "
            "(λ decays from regularization towards the floor)."
        )
    if cfg.normalize_observations and cfg.collector_workers != 1:
        raise ConfigError(
            "normalize_observations=true needs collector_workers=1 (the running statistics live in the "
            f"training env), got collector_workers={cfg.collector_workers}."
        )
    if "ppo_minibatch_size" in cfg and cfg.frames_per_batch % cfg.ppo_minibatch_size:
        raise ConfigError(
            f"frames_per_batch={cfg.frames_per_batch} must be a multiple of "
            f"ppo_minibatch_size={cfg.ppo_minibatch_size}."
        )


def check_logger(logger: str) -> None:
    """``tensorboard`` and ``wandb`` need their package installed."""
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(logger)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"logger={logger} needs {package}: pip install {package}.")


def check_device(device: str) -> None:
    """The device must parse and exist on this machine."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={device!r} is not a torch device: use cpu, cuda or cuda:<index>.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r}: CUDA is not available on this machine; use device=cpu.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif parsed.type not in ("cpu", "mps"):
        raise ConfigError(f"device={device!r}: the recipes run on cpu or cuda.")


def load_config(config_name: str, overrides: list[str]) -> DictConfig:
    """``recipes/<config_name>.yaml`` with command-line-style overrides, outside a Hydra app (tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
