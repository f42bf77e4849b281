"""TorchRL losses for the two players of STAC (docs/math.md §2–3).

Both hold their networks directly (not functionalised): :class:`~torchrl_stac.ImplicitGradientHook`
differentiates through the live parameters that the optimizers step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, composite_lp_aggregate
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, dispatch_value_estimator

CriticType = Literal["v", "q"]


def as_batch(value: torch.Tensor, td: TensorDictBase, name: NestedKey) -> torch.Tensor:
    """Reshape a per-step entry (``[*B]`` or ``[*B, 1]``) to the batch shape ``[*B]``."""
    if value.numel() != td.batch_size.numel():
        raise ValueError(
            f"{name!r} has shape {tuple(value.shape)} but the batch is {tuple(td.batch_size)}: "
            "expected one scalar per step ([*B] or [*B, 1])."
        )
    return value.reshape(td.batch_size)


def per_step(value: torch.Tensor, tensordict: TensorDictBase, name: str) -> torch.Tensor:
    """``[*B]`` values, summed over action dimensions for factorised distributions."""
    if value.ndim > tensordict.batch_dims and value.shape[: tensordict.batch_dims] == tensordict.batch_size:
        value = value.flatten(tensordict.batch_dims).sum(-1)
    return as_batch(value, tensordict, name)


def require(td: TensorDictBase, key: NestedKey, hint: str) -> torch.Tensor:
    """``td[key]``, or a KeyError that names the key and how to produce it."""
    value = td.get(key, None)
    if value is None:
        raise KeyError(f"the batch has no {key!r} entry. {hint}")
    return value


def check_finite(value: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise FloatingPointError(
            f"{what} is not finite ({value.detach().flatten()[:4].tolist()}...). Check the batch for "
            "NaN/inf observations or rewards, and lower the learning rates if parameters diverged."
        )


@dataclass
class TransitionKeys:
    """The transition's keys read under ``"next"``: ``reward``, ``done`` and ``terminated``."""

    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"


@dataclass
class ValueKeys(TransitionKeys):
    """The value estimator's keys: ``value`` (the critic's output), ``value_target`` and ``advantage``."""

    value_target: NestedKey = "value_target"
    value: NestedKey = "state_value"
    advantage: NestedKey = "advantage"


class _OnPolicyLoss(LossModule):
    """Shared value-estimator wiring: TD(0), TD(1), TD(λ) or GAE on the critic, keys forwarded."""

    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
        ValueEstimators.GAE,
    )

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:
            return self
        dispatch_value_estimator(
            self,
            value_type,
            supported=self.SUPPORTED_VALUE_ESTIMATORS,
            tensor_keys={
                name: getattr(self.tensor_keys, name)
                for name in ("advantage", "value", "value_target", "reward", "done", "terminated")
            },
            **hp,
        )
        return self


class CriticLoss(_OnPolicyLoss):
    """Squared-error loss of the follower: ``L(w) = (1/N) Σ_t (V_w(s_t) − G_t)²``.

    ``N`` counts every step of the batch (shape ``[N]`` or ``[B, T]``). The critic is a state-value
    network V(s) (writes ``state_value``) or an action-value network Q(s, a) (writes
    ``state_action_value``), inferred from its out_keys unless ``critic_type`` is given. The
    target G is read from ``value_target``; the paper uses Monte-Carlo returns, which
    ``loss.value_estimator(td)`` writes with the default TD(1) estimator (bootstrapped with the
    critic only where an episode is truncated).

    Returns a TensorDict with ``loss_critic`` (scalar).
    """

    @dataclass
    class _AcceptedKeys(ValueKeys):
        """Tensordict keys, configurable with ``set_keys``: :class:`ValueKeys` (``value_target``: the
        regression target G, ``[*B]`` or ``[*B, 1]``; ``value``: ``"state_value"``, or
        ``"state_action_value"`` for a Q critic)."""

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    default_value_estimator = ValueEstimators.TD1

    def __init__(self, value_network: TensorDictModule, *, critic_type: CriticType | None = None):
        super().__init__()
        self.value_network = value_network
        out_keys = list(value_network.out_keys)
        if critic_type is None:
            critic_type = "q" if "state_action_value" in out_keys else "v"
        if critic_type not in ("v", "q"):
            raise ValueError(f"critic_type must be 'v' or 'q', got {critic_type!r}.")
        self.critic_type = critic_type
        value_key = "state_action_value" if critic_type == "q" else "state_value"
        if value_key not in out_keys:
            value_key = out_keys[0]
        self.set_keys(value=value_key)

    @property
    def in_keys(self) -> list[NestedKey]:
        return [*self.value_network.in_keys, self.tensor_keys.value_target]

    @property
    def out_keys(self) -> list[str]:
        return ["loss_critic"]

    def predict(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Critic predictions V_w(s_t) or Q_w(s_t, a_t), shape ``[*B]``, differentiable in w."""
        missing = [k for k in self.value_network.in_keys if k not in tensordict.keys(True)]
        if missing:
            raise KeyError(f"the critic needs {missing}, absent from the batch.")
        out = self.value_network(tensordict.select(*self.value_network.in_keys).copy())
        return as_batch(out.get(self.tensor_keys.value), tensordict, self.tensor_keys.value)

    def target(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Regression target G, shape ``[*B]``, detached."""
        target = require(
            tensordict,
            self.tensor_keys.value_target,
            "Write Monte-Carlo returns first with critic_loss.value_estimator(td), or point "
            "set_keys(value_target=...) at the key holding the critic's targets.",
        )
        return as_batch(target, tensordict, self.tensor_keys.value_target).detach()

    def squared_error(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``mean((prediction − target)²)``: the loss L as a function of the predictions."""
        return (prediction - target).pow(2).mean()

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        loss = self.squared_error(self.predict(tensordict), self.target(tensordict))
        check_finite(loss, "loss_critic")
        return TensorDict({"loss_critic": loss}, batch_size=[])


class StackelbergActorLoss(_OnPolicyLoss):
    """Policy-gradient loss of the leader: ``loss_objective = −(1/N) Σ_t log π_θ(a_t|s_t) Â_t / σ``.

    Its gradient is −∂J/∂θ, the partial derivative; :class:`~torchrl_stac.ImplicitGradientHook`
    adds the Stackelberg correction afterwards. σ = std(Â) (and the mean is subtracted) when
    ``normalize_advantage`` is set, else σ = 1. If the batch has no ``advantage`` entry, the value
    estimator (GAE by default, see ``make_value_estimator``) writes it into the input tensordict,
    so that the hook sees the same advantages.

    Args:
        actor_network: probabilistic actor (TanhNormal, Normal, Categorical, OneHotCategorical...).
        critic_network: the value network shared with :class:`CriticLoss`, used by the value
            estimator and by the hook.
        entropy_coeff: if set, adds ``loss_entropy = −entropy_coeff · mean entropy``.
        normalize_advantage: standardise Â over the batch.

    Returns a TensorDict with ``loss_objective`` (and ``entropy``, ``loss_entropy``).
    """

    @dataclass
    class _AcceptedKeys(ValueKeys):
        """Tensordict keys, configurable with ``set_keys``: :class:`ValueKeys` (``advantage``: Â,
        ``[*B]`` or ``[*B, 1]``), ``action`` (the action taken) and ``sample_log_prob`` (written by the
        collector; not used by the loss)."""

        action: NestedKey = "action"
        sample_log_prob: NestedKey | None = None

        def __post_init__(self):
            if self.sample_log_prob is None:
                aggregate = composite_lp_aggregate(nowarn=True)
                self.sample_log_prob = "sample_log_prob" if aggregate else "action_log_prob"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    default_value_estimator = ValueEstimators.GAE

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        critic_network: TensorDictModule,
        *,
        entropy_coeff: float | None = None,
        normalize_advantage: bool = False,
    ):
        super().__init__()
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                "actor_network must be a probabilistic actor with get_dist(), e.g. torchrl's "
                f"ProbabilisticActor; got {type(actor_network).__name__}."
            )
        self.actor_network = actor_network
        self.critic_network = critic_network
        self.normalize_advantage = normalize_advantage
        if entropy_coeff is not None and entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {entropy_coeff}.")
        self.register_coeff_buffer("entropy_coeff", entropy_coeff)
        self.set_keys(action=actor_network.dist_sample_keys[0])
        value_keys = list(critic_network.out_keys)
        if value_keys and value_keys[0] != self.tensor_keys.value:
            self.set_keys(value=value_keys[0])

    @property
    def in_keys(self) -> list[NestedKey]:
        return [*self.actor_network.in_keys, self.tensor_keys.action, self.tensor_keys.advantage]

    @property
    def out_keys(self) -> list[str]:
        outs = ["loss_objective"]
        if self.entropy_coeff is not None:
            outs += ["entropy", "loss_entropy"]
        return outs

    def _distribution(self, tensordict: TensorDictBase) -> torch.distributions.Distribution:
        missing = [k for k in self.actor_network.in_keys if k not in tensordict.keys(True)]
        if missing:
            raise KeyError(f"the actor needs {missing}, absent from the batch.")
        return self.actor_network.get_dist(tensordict.select(*self.actor_network.in_keys).copy())

    def _stored_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        action = require(tensordict, self.tensor_keys.action, "The actor loss needs the actions taken.")
        if action.requires_grad:
            raise RuntimeError(f"the stored {self.tensor_keys.action!r} requires grad; detach it.")
        return action

    def log_prob(self, tensordict: TensorDictBase) -> torch.Tensor:
        """log π_θ(a_t|s_t) of the stored actions, shape ``[*B]``, differentiable in θ."""
        return self._log_prob(self._distribution(tensordict), self._stored_action(tensordict), tensordict)

    def _log_prob(self, dist, action: torch.Tensor, tensordict: TensorDictBase) -> torch.Tensor:
        """Log-probability per step, shape ``[*B]``."""
        return per_step(dist.log_prob(action), tensordict, "log_prob")

    def advantage(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Raw advantages Â, shape ``[*B]``; computed in place by the value estimator if absent."""
        if self.tensor_keys.advantage not in tensordict.keys(True):
            with torch.no_grad():
                self.value_estimator(tensordict)
        value = as_batch(tensordict.get(self.tensor_keys.advantage), tensordict, self.tensor_keys.advantage)
        return value.detach()

    def advantage_scale(self, advantage: torch.Tensor) -> torch.Tensor:
        """σ: std(Â) (clamped at 1e-8) under ``normalize_advantage``, else 1."""
        if not self.normalize_advantage:
            return torch.ones((), dtype=advantage.dtype, device=advantage.device)
        if advantage.numel() < 2:
            raise ValueError("normalize_advantage needs at least two steps in the batch.")
        return advantage.std().clamp_min(1e-8)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        advantage = self.advantage(tensordict)
        check_finite(advantage, f"the advantage {self.tensor_keys.advantage!r}")
        scale = self.advantage_scale(advantage)
        if self.normalize_advantage:
            advantage = advantage - advantage.mean()
        dist = self._distribution(tensordict)
        log_prob = self._log_prob(dist, self._stored_action(tensordict), tensordict)
        loss = -(log_prob * advantage).mean() / scale
        check_finite(loss, "loss_objective")
        out = TensorDict({"loss_objective": loss}, batch_size=[])
        if self.entropy_coeff is not None:
            entropy = self._entropy(dist, tensordict)
            out.set("entropy", entropy.detach())
            out.set("loss_entropy", -self.entropy_coeff * entropy)
        return out

    def _entropy(self, dist: torch.distributions.Distribution, tensordict: TensorDictBase) -> torch.Tensor:
        try:
            return per_step(dist.entropy(), tensordict, "entropy").mean()
        except NotImplementedError:  # e.g. TanhNormal: one-sample Monte-Carlo estimate
            sample = dist.rsample()
            return -self._log_prob(dist, sample, tensordict).mean()
