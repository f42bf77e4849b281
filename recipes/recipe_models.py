"""The actor and critic networks of the recipes: tanh MLPs (the paper's; TorchRL's PPO ones with ``ppo=True``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from tensordict.nn import AddStateIndependentNormalScale, NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Categorical, OneHot
from torchrl.envs import EnvBase
from torchrl.modules import (
    MLP,
    AdditiveGaussianModule,
    OneHotCategorical,
    ProbabilisticActor,
    TanhModule,
    TanhNormal,
    ValueOperator,
)

from recipe_schema import ConfigError


def make_models(
    env: EnvBase, cells: list[int], device: str, *, ppo: bool = False
) -> tuple[ProbabilisticActor, ValueOperator]:
    """Tanh MLP actor (TanhNormal, or OneHotCategorical for discrete actions) and V critic.

    ``ppo=True`` builds them as TorchRL's MuJoCo PPO recipe does: orthogonal initialisation (gain 1
    for the actor, 0.01 for the critic, zero biases), a state-independent scale for continuous
    actions, and an untransformed location (``tanh_loc=False``).
    """
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec_unbatched
    if isinstance(action_spec, Categorical):
        raise ConfigError("use one-hot action encoding (GymEnv's default) for discrete actions.")
    act_dim = action_spec.shape[-1]
    if isinstance(action_spec, OneHot):
        net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=list(cells), activation_class=nn.Tanh)
        module = TensorDictModule(net, ["observation"], ["logits"])
        actor = ProbabilisticActor(
            module, in_keys=["logits"], spec=action_spec, distribution_class=OneHotCategorical, return_log_prob=True
        )
    else:
        bounds = {"low": action_spec.space.low, "high": action_spec.space.high}
        if ppo:
            net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=list(cells), activation_class=nn.Tanh)
            net = nn.Sequential(orthogonal(net, 1.0), AddStateIndependentNormalScale(act_dim, scale_lb=1e-8))
            bounds["tanh_loc"] = False
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
            distribution_kwargs=bounds,
            return_log_prob=True,
        )
    value_net = MLP(in_features=obs_dim, out_features=1, num_cells=list(cells), activation_class=nn.Tanh)
    critic = ValueOperator(orthogonal(value_net, 0.01) if ppo else value_net, in_keys=["observation"])
    if ppo and isinstance(action_spec, OneHot):
        orthogonal(actor.module[0].module, 1.0)
    return actor.to(device), critic.to(device)


def _init_linear_layers(net: nn.Module, init_weight: Callable[[torch.Tensor], Any]) -> nn.Module:
    """``init_weight`` on the weight and zero on the bias of every linear layer of ``net`` (in place)."""
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            init_weight(layer.weight)
            layer.bias.data.zero_()
    return net


def orthogonal(net: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights with ``gain`` and zero biases for every linear layer of ``net`` (in place)."""
    return _init_linear_layers(net, lambda weight: torch.nn.init.orthogonal_(weight, gain))


def glorot(net: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every linear layer of ``net`` (in place): the SAC
    authors' initialisation, where PyTorch's default draws both from U(±1/√fan_in)."""
    return _init_linear_layers(net, torch.nn.init.xavier_uniform_)


def q_critics(env: EnvBase, cells: list[int], device: str, count: int) -> list[ValueOperator]:
    """``count`` ReLU MLP Q critics on (observation, action) (TorchRL's SAC and TD3 critics)."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    act_dim = env.action_spec_unbatched.shape[-1]
    return [
        ValueOperator(
            MLP(in_features=obs_dim + act_dim, out_features=1, num_cells=list(cells), activation_class=nn.ReLU),
            in_keys=["observation", "action"],
        ).to(device)
        for _ in range(count)
    ]


def make_deterministic_models(
    env: EnvBase, cells: list[int], device: str, exploration_noise: float, critics: int
) -> tuple[TensorDictModule, TensorDictSequential, list[ValueOperator]]:
    """TD3's and DDPG's networks: a ReLU MLP actor μ_θ squashed into the action bounds (tanh), the
    collector's policy (μ_θ plus Gaussian noise of scale ``exploration_noise``, in the bounds'
    units; none in deterministic mode), and ``critics`` Q critics."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec_unbatched
    if isinstance(action_spec, OneHot | Categorical):
        raise ConfigError("TD3 and DDPG here need continuous (Box) actions.")
    net = MLP(in_features=obs_dim, out_features=action_spec.shape[-1], num_cells=list(cells), activation_class=nn.ReLU)
    actor = TensorDictSequential(
        TensorDictModule(net, ["observation"], ["action_preimage"]),
        TanhModule(in_keys=["action_preimage"], out_keys=["action"], spec=action_spec),
    ).to(device)
    noise = AdditiveGaussianModule(
        spec=action_spec, sigma_init=exploration_noise, sigma_end=exploration_noise, annealing_num_steps=1
    )
    policy = TensorDictSequential(actor, noise.to(device))
    return actor, policy, q_critics(env, cells, device, critics)


def make_sac_models(
    env: EnvBase,
    cells: list[int],
    device: str,
    scale_lb: float = 1e-4,
    scale_mapping: str = "biased_softplus_1.0",
) -> tuple[ProbabilisticActor, list[ValueOperator]]:
    """TorchRL's SAC networks: a ReLU MLP TanhNormal actor and twin Q critics on (observation, action).

    The actor's pre-tanh scale is ``max(scale_mapping(raw), scale_lb)``; ``scale_mapping`` is a
    ``tensordict.nn`` mapping name: TorchRL's ``"biased_softplus_1.0"`` (softplus(raw + b) + 0.01,
    so never below 0.01) or ``"exp"`` (with a tiny ``scale_lb``, the exp(log-std) of SB3 and Tianshou).
    """
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec_unbatched
    if isinstance(action_spec, OneHot | Categorical):
        raise ConfigError("SAC here needs continuous (Box) actions.")
    act_dim = action_spec.shape[-1]
    net = nn.Sequential(
        MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=list(cells), activation_class=nn.ReLU),
        NormalParamExtractor(scale_mapping=scale_mapping, scale_lb=scale_lb),
    )
    actor = ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high},
        return_log_prob=False,
    )
    return actor.to(device), q_critics(env, cells, device, 2)


def make_offpolicy_models(
    cfg: DictConfig, env: EnvBase
) -> tuple[ProbabilisticActor | TensorDictSequential, TensorDictModule, list[ValueOperator]]:
    """``recipes/stsac_mujoco.py``'s networks from its config: ``(actor, policy, critics)``, the policy
    being what the collector runs (SAC: the actor, which explores by sampling; TD3/DDPG: the actor plus
    Gaussian noise), initialised as ``network_init`` says."""
    base = cfg.algo.removeprefix("st")  # sac, td3 or ddpg
    if base == "sac":
        actor, critics = make_sac_models(env, cfg.num_cells, cfg.device, cfg.scale_lb, cfg.scale_mapping)
        policy = actor
    else:
        critic_count = 2 if base == "td3" else 1
        actor, policy, critics = make_deterministic_models(
            env, cfg.num_cells, cfg.device, cfg.exploration_noise, critic_count
        )
    if cfg.network_init == "glorot":
        for net in (actor, *critics):
            glorot(net)
    return actor, policy, critics
