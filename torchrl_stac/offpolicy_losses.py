"""Twin-Q off-policy losses whose players are coupled through the critic's target (docs/math.md §6).

Both players' losses depend on both parameter sets through ordinary autograd:

* actor (θ): SAC ``f_A = mean_B[α log π_θ(ã|s) − min_j Q_wj(s, ã)]``, ã = rsample π_θ(·|s);
  TD3 ``f_A = −mean_B Q_w1(s, μ_θ(s))``;
* critic (w = every Q network): ``f_C = Σ_j mean_B[(Q_wj(s, a) − y)²]``,
  ``y = r + γ (1 − terminated) V̄(s')`` with the bootstrap value V̄ of the sibling: SAC
  ``min_j Q̄_j(s', a') − α log π_θ(a'|s')``, a' = rsample π_θ(·|s'); TD3 ``min_j Q̄_j(s', a')``,
  a' = clamp(μ_θ(s') + clamp(σε, −c, c)).

Unlike TorchRL's ``SACLoss``/``TD3Loss`` the target y keeps its θ-gradient (the target networks Q̄
are frozen, not w): this is where the players are coupled, ``∇_θ∇_w f_C = −2 E[∇_w Q_w ∇_θ yᵀ] ≠ 0``.
Each call draws one standard-normal sample for ã and one for a' and stores them in the batch, so
that both players' losses see the same minibatch and the same draw.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from tensordict.utils import NestedKey
from torch import distributions as D
from torchrl.objectives import LossModule

from torchrl_stac.onpolicy_losses import TransitionKeys, check_finite, require


def reparameterized(dist: D.Distribution, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(action, log π(action))`` for the standard-normal ``noise``, differentiable in the parameters.

    Handles a (possibly ``Independent``) ``Normal`` and a ``TransformedDistribution`` over one, such
    as TorchRL's ``TanhNormal``; the log-probability is computed from the pre-transform sample, so
    no ``atanh`` is inverted. ``log π`` is summed over the action dimensions: shape ``[*B]``.
    """
    transforms = list(dist.transforms) if isinstance(dist, D.TransformedDistribution) else []
    base = dist.base_dist if transforms else dist
    normal = base_normal(dist)
    sample = normal.loc + normal.scale * noise
    log_prob = base.log_prob(sample)
    event_dims = len(dist.event_shape)
    for transform in transforms:
        out = transform(sample)
        jacobian = transform.log_abs_det_jacobian(sample, out)
        extra = event_dims - transform.domain.event_dim
        log_prob = log_prob - (jacobian.sum(tuple(range(-extra, 0))) if extra > 0 else jacobian)
        sample = out
    if log_prob.ndim == sample.ndim:  # a plain Normal: per-dimension log-probs
        log_prob = log_prob.sum(-1)
    return sample, log_prob


def base_normal(dist: D.Distribution) -> D.Normal:
    """The Normal under a (possibly ``Independent``) Normal or a ``TransformedDistribution`` of one,
    such as TorchRL's ``TanhNormal``: shape ``[*B, A]``."""
    base = dist.base_dist if isinstance(dist, D.TransformedDistribution) else dist
    normal = base.base_dist if isinstance(base, D.Independent) else base
    if not isinstance(normal, D.Normal):
        raise TypeError(f"needs a Normal-based distribution, got {type(dist).__name__}.")
    return normal


def frozen_copy(network: torch.nn.Module) -> torch.nn.Module:
    """A deep copy without gradients: a target network."""
    target = copy.deepcopy(network)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class TwinQLoss(LossModule):
    """The shared half of the twin-Q losses: Q networks, their targets, the noise draw, the critic's
    loss. A sibling defines the actor's loss and the bootstrap value ``V̄(s')`` of the target.

    Args:
        actor_network: the actor (θ).
        qvalue_networks: the critic's Q networks (twin: two), each reading ``observation`` and
            ``action`` and writing ``state_action_value``; together they are the critic's w.
        gamma: discount.
    """

    @dataclass
    class _AcceptedKeys(TransitionKeys):
        """Tensordict keys, configurable with ``set_keys``: :class:`TransitionKeys`, ``action`` (the
        stored action), ``state_action_value`` (the Q networks' output) and ``noise`` (where each
        call's standard-normal draws are stored)."""

        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        noise: NestedKey = "sac_noise"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(self, actor_network: TensorDictModule, qvalue_networks: Sequence[TensorDictModule], gamma: float):
        super().__init__()
        if not qvalue_networks:
            raise ValueError("give at least one Q network (twin Q: two).")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        self.actor_network = actor_network
        self.qvalue_networks = torch.nn.ModuleList(qvalue_networks)
        self.target_qvalue_networks = torch.nn.ModuleList([frozen_copy(network) for network in qvalue_networks])
        self.gamma = float(gamma)

    @property
    def actor_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.actor_network.parameters() if p.requires_grad]

    @property
    def critic_params(self) -> list[torch.nn.Parameter]:
        return [p for net in self.qvalue_networks for p in net.parameters() if p.requires_grad]

    @torch.no_grad()
    def update_targets(self, tau: float = 0.005) -> None:
        """Q̄ ← (1 − τ) Q̄ + τ Q (Polyak averaging, as TorchRL's ``SoftUpdate``)."""
        for net, target in zip(self.qvalue_networks, self.target_qvalue_networks, strict=True):
            for p, q in zip(net.parameters(), target.parameters(), strict=True):
                q.lerp_(p, tau)

    def draw_noise(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Store one standard-normal draw for ã (``[*B, A]``) and one for a' under the noise key."""
        action = require(tensordict, self.tensor_keys.action, "The losses need the stored actions.")
        noise = torch.randn(2, *action.shape, dtype=action.dtype, device=action.device)
        tensordict.set(self.tensor_keys.noise, noise.movedim(0, -2).contiguous())
        return tensordict

    def noise(self, tensordict: TensorDictBase, index: int) -> torch.Tensor:
        """The stored draw for ã (``index=0``) or a' (``index=1``), ``[*B, A]``."""
        hint = "call draw_noise(batch) first (one draw shared by both players' losses)."
        return require(tensordict, self.tensor_keys.noise, hint)[..., index, :]

    def q_values(self, tensordict: TensorDictBase, action: torch.Tensor, *, target: bool = False) -> torch.Tensor:
        """``[J, *B]``: each Q network's (or target network's) Q(s, action) on ``tensordict``'s states."""
        networks = self.target_qvalue_networks if target else self.qvalue_networks
        values = []
        for network in networks:
            td = tensordict.select(*[k for k in network.in_keys if k != self.tensor_keys.action]).copy()
            td.set(self.tensor_keys.action, action)
            values.append(network(td).get(self.tensor_keys.state_action_value).squeeze(-1))
        return torch.stack(values)

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """f_A(θ, w) and the per-sample log π_θ(ã|s) (``[*B]``; zeros for a deterministic actor)."""
        raise NotImplementedError

    def bootstrap_value(self, next_td: TensorDictBase, noise: torch.Tensor) -> torch.Tensor:
        """V̄(s') of the critic's target, ``[*B]``, differentiable in θ."""
        raise NotImplementedError

    def qvalue_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """f_C(θ, w) = Σ_j mean[(Q_wj(s, a) − y)²]; y keeps its θ-gradient through V̄(s')."""
        next_td = tensordict.get("next")
        next_value = self.bootstrap_value(next_td, self.noise(tensordict, 1))
        reward = next_td.get(self.tensor_keys.reward).reshape(next_value.shape)
        terminated = next_td.get(self.tensor_keys.terminated).reshape(next_value.shape)
        target = reward + self.gamma * (~terminated).to(reward.dtype) * next_value
        q = self.q_values(tensordict, tensordict.get(self.tensor_keys.action))
        return (q - target).pow(2).mean(-1 if q.ndim == 2 else tuple(range(1, q.ndim))).sum()

    def alpha_loss(self, tensordict: TensorDictBase, log_prob: torch.Tensor) -> torch.Tensor | None:
        """The temperature's loss from the actor's log-probabilities, or None (no trainable temperature)."""
        return None

    def player_losses(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f_A, log π_θ(ã|s), f_C)`` on one minibatch and one noise draw (drawn if the batch has none);
        raises FloatingPointError if either loss is not finite."""
        if self.tensor_keys.noise not in tensordict.keys(True):
            self.draw_noise(tensordict)
        loss_actor, log_prob = self.actor_loss(tensordict)
        loss_qvalue = self.qvalue_loss(tensordict)
        check_finite(loss_actor, "loss_actor")
        check_finite(loss_qvalue, "loss_qvalue")
        return loss_actor, log_prob, loss_qvalue

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_actor`` (f_A) and ``loss_qvalue`` (f_C), plus ``loss_alpha``, ``alpha`` and ``entropy``
        for SAC. Draws the noise if the batch carries none."""
        loss_actor, log_prob, loss_qvalue = self.player_losses(tensordict)
        return TensorDict(
            {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, **self.extra_outputs(tensordict, log_prob)}, []
        )

    def extra_outputs(self, tensordict: TensorDictBase, log_prob: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs besides the two players' losses (SAC: ``loss_alpha``, ``alpha``, ``entropy``)."""
        return {}


class StackelbergSACLoss(TwinQLoss):
    """The two players of (Stackelberg) SAC: a TanhNormal actor and twin soft Q critics.

    Args:
        actor_network: a probabilistic actor (``get_dist``) over a Normal or TanhNormal.
        qvalue_networks: the twin critics.
        gamma: discount.
        alpha_init: initial entropy temperature α.
        target_entropy: α's target; ``"auto"``: −(action dimensions).
        fixed_alpha: keep α constant (``loss_alpha`` carries no gradient).

    A plain SAC step backpropagates each loss into its own parameters
    (:func:`~torchrl_stac.plain_gradients`); a Stackelberg step hands them to
    :class:`~torchrl_stac.StackelbergUpdate`. α is neither player's: ``loss_alpha`` trains it.
    """

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_networks: Sequence[TensorDictModule],
        *,
        gamma: float = 0.99,
        alpha_init: float = 1.0,
        target_entropy: float | Literal["auto"] = "auto",
        fixed_alpha: bool = False,
    ):
        if not hasattr(actor_network, "get_dist"):
            raise TypeError("actor_network must be a probabilistic actor with get_dist(), e.g. a ProbabilisticActor.")
        super().__init__(actor_network, qvalue_networks, gamma)
        self.fixed_alpha = fixed_alpha
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(alpha_init)), requires_grad=not fixed_alpha)
        self._target_entropy = target_entropy

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def _policy(self, observation_td: TensorDictBase) -> D.Distribution:
        return self.actor_network.get_dist(observation_td.select(*self.actor_network.in_keys).copy())

    def _policy_sample(self, observation_td: TensorDictBase, noise: torch.Tensor):
        return reparameterized(self._policy(observation_td), noise)

    def policy_normal(self, tensordict: TensorDictBase) -> D.Normal:
        """π_θ(·|s) on the batch's states before its squash, ``[*B, A]`` (for the Fisher matrix)."""
        return base_normal(self._policy(tensordict))

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """f_A(θ, w) = mean[α log π_θ(ã|s) − min_j Q_wj(s, ã)] and log π_θ(ã|s) (``[*B]``)."""
        action, log_prob = self._policy_sample(tensordict, self.noise(tensordict, 0))
        q_min = self.q_values(tensordict, action).min(0).values
        return (self.alpha * log_prob - q_min).mean(), log_prob

    def bootstrap_value(self, next_td: TensorDictBase, noise: torch.Tensor) -> torch.Tensor:
        """min_j Q̄_j(s', a') − α log π_θ(a'|s'), a' ~ π_θ(·|s') reparameterised."""
        next_action, next_log_prob = self._policy_sample(next_td, noise)
        return self.q_values(next_td, next_action, target=True).min(0).values - self.alpha * next_log_prob

    def target_entropy(self, action: torch.Tensor) -> float:
        """α's target entropy: the given value, or −(action dimensions) for ``"auto"``."""
        return -float(action.shape[-1]) if self._target_entropy == "auto" else float(self._target_entropy)

    def alpha_loss(self, tensordict: TensorDictBase, log_prob: torch.Tensor) -> torch.Tensor | None:
        """−log α · (target entropy − entropy), entropy = −mean log π_θ(ã|s); None with a fixed α."""
        if self.fixed_alpha:
            return None
        entropy = -log_prob.detach().mean()
        return -self.log_alpha * (self.target_entropy(tensordict.get(self.tensor_keys.action)) - entropy)

    def extra_outputs(self, tensordict: TensorDictBase, log_prob: torch.Tensor) -> dict[str, torch.Tensor]:
        loss_alpha = self.alpha_loss(tensordict, log_prob)
        return {
            "loss_alpha": loss_alpha if loss_alpha is not None else torch.zeros(()),
            "alpha": self.alpha,
            "entropy": -log_prob.detach().mean(),
        }


class StackelbergTD3Loss(TwinQLoss):
    """The two players of (Stackelberg) TD3: a deterministic actor μ_θ and twin Q critics.

    The target action ``a' = clamp(μ_θ(s') + clamp(σε, −c, c), low, high)`` comes from the current
    actor WITH its θ-gradient (TorchRL's ``TD3Loss`` takes it from the target actor under
    ``no_grad``, and the mixed term vanishes). The actor's loss reads the first critic only.

    Args:
        actor_network: a module writing the action (``action`` key) from ``observation``.
        qvalue_networks: the twin critics.
        action_low, action_high: the action bounds of the target action.
        gamma: discount.
        policy_noise, noise_clip: TD3's target smoothing σ and c.
    """

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_networks: Sequence[TensorDictModule],
        *,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        gamma: float = 0.99,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
    ):
        super().__init__(actor_network, qvalue_networks, gamma)
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.get_default_dtype()))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.get_default_dtype()))
        self.policy_noise, self.noise_clip = float(policy_noise), float(noise_clip)

    def _deterministic(self, observation_td: TensorDictBase) -> torch.Tensor:
        td = observation_td.select(*self.actor_network.in_keys).copy()
        return self.actor_network(td).get(self.tensor_keys.action)

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """f_A(θ, w) = −mean Q_w1(s, μ_θ(s)); the log-probabilities are zeros."""
        action = self._deterministic(tensordict)
        q_first = self.q_values(tensordict, action)[0]
        return -q_first.mean(), torch.zeros_like(q_first)

    def bootstrap_value(self, next_td: TensorDictBase, noise: torch.Tensor) -> torch.Tensor:
        """min_j Q̄_j(s', a') at the smoothed target action a' (differentiable in θ)."""
        smoothing = (self.policy_noise * noise).clamp(-self.noise_clip, self.noise_clip)
        action = torch.clamp(self._deterministic(next_td) + smoothing, min=self.action_low, max=self.action_high)
        return self.q_values(next_td, action, target=True).min(0).values


class StackelbergDDPGLoss(StackelbergTD3Loss):
    """The two players of (Stackelberg) DDPG: TD3's losses with one critic and no target smoothing.

    f_A = −mean Q_w(s, μ_θ(s)); y = r + γ(1 − terminated) Q̄(s', μ_θ(s')), the target action keeping
    its θ-gradient.
    """

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_network: TensorDictModule,
        *,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        gamma: float = 0.99,
    ):
        super().__init__(
            actor_network,
            [qvalue_network],
            action_low=action_low,
            action_high=action_high,
            gamma=gamma,
            policy_noise=0.0,
            noise_clip=0.0,
        )
