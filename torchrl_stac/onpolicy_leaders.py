"""The leader's side of the Stackelberg correction, for our actor loss and for TorchRL's own.

:class:`~torchrl_stac.ImplicitGradientHook` needs from the leader's loss: the actor's parameters,
log π_θ(a_t|s_t) of the stored actions, the advantages Â and the scale σ by which the loss divides
them, and (for PPO) the behaviour policy's log-probabilities. :func:`as_leader` reads these from
a :class:`~torchrl_stac.StackelbergActorLoss` or from TorchRL's ``A2CLoss``, ``PPOLoss``,
``ClipPPOLoss`` and ``KLPENPPOLoss``, through their ``tensor_keys``.

Importance weights (PPO, docs/math.md §7). PPO takes several steps on one batch, so after the first
the batch comes from π_old ≠ π_θ. The mixed term is then taken through the same local surrogate as
PPO's objective: the critic's target V^{π_θ}(s₀) is replaced by its first-order approximation
around π_old (Kakade & Langford; TRPO),

    Ṽ_θ(s₀) = V^{old}(s₀) + E_{τ∼π_old}[ Σ_t γ^t (ρ_t(θ) − 1) Q^{old}(s_t, a_t) | s₀ ],
    ρ_t(θ) = π_θ(a_t|s_t) / π_old(a_t|s_t),

whose θ-gradient is E_{τ∼π_old}[Σ_t γ^t ρ_t ∇_θ log π_θ(a_t|s_t) Q^{old}(s_t, a_t)]. The §2
surrogate S(θ) = −(2/N) Σ_t log π_θ · Ψ_t C_t therefore becomes −(2/N) Σ_t ρ_t(θ) · Ψ_t C_t:
identical gradient at θ = θ_old (ρ = 1), unbiased for the surrogate's mixed term after θ moves
(Ψ may subtract a state baseline: Σ_a ∇π_θ(a|s) b(s) = 0). PPO's clipping is not applied to the
correction: the clip belongs to the leader's objective J, while the mixed term comes from the
follower's objective L. ``tests/library/test_tabular.py`` checks the estimator against its exact value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.objectives import A2CLoss, LossModule, PPOLoss

from torchrl_stac.onpolicy_losses import CriticLoss, StackelbergActorLoss, as_batch, per_step, require

LEADER_TYPES = (StackelbergActorLoss, A2CLoss, PPOLoss)


@dataclass
class Leader:
    """What the hook reads from the leader's loss.

    Attributes:
        loss: the leader's loss module.
        actor: its probabilistic actor (``get_dist``); called with the live parameters.
        critic: the critic the loss reads its values from.
        importance_weighted: weight the correction by ρ_t = π_θ/π_old (PPO) instead of log π_θ.
    """

    loss: LossModule
    actor: TensorDictModule
    critic: TensorDictModule
    importance_weighted: bool

    @property
    def keys(self):
        return self.loss.tensor_keys

    @property
    def actor_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.actor.parameters() if p.requires_grad]

    def log_prob(self, td: TensorDictBase) -> torch.Tensor:
        """log π_θ(a_t|s_t) of the stored actions, ``[*B]``, differentiable in θ."""
        if isinstance(self.loss, StackelbergActorLoss):
            return self.loss.log_prob(td)
        missing = [k for k in self.actor.in_keys if k not in td.keys(True)]
        if missing:
            raise KeyError(f"the actor needs {missing}, absent from the batch.")
        action = require(td, self.keys.action, "The leader's loss needs the actions taken.")
        dist = self.actor.get_dist(td.select(*self.actor.in_keys).copy())
        return per_step(dist.log_prob(action.detach()), td, "log_prob")

    def surrogate_factor(self, td: TensorDictBase) -> torch.Tensor:
        """``log π_θ`` (on-policy) or ``ρ_t(θ) = exp(log π_θ − log π_old)`` (PPO), ``[*B]``."""
        log_prob = self.log_prob(td)
        if not self.importance_weighted:
            return log_prob
        hint = "PPO's importance ratio needs the collector's log-probabilities (return_log_prob=True)."
        behaviour = as_batch(require(td, self.keys.sample_log_prob, hint), td, self.keys.sample_log_prob)
        return torch.exp(log_prob - behaviour.detach())

    def advantage(self, td: TensorDictBase) -> torch.Tensor:
        """Raw advantages Â, ``[*B]`` (before the loss normalises them)."""
        if isinstance(self.loss, StackelbergActorLoss):
            return self.loss.advantage(td)
        hint = "Compute advantages (e.g. with the loss's value_estimator or torchrl's GAE) before the hook."
        return as_batch(require(td, self.keys.advantage, hint), td, self.keys.advantage).detach()

    def advantage_scale(self, advantage: torch.Tensor) -> torch.Tensor:
        """σ: the loss divides Â by it (std(Â) under ``normalize_advantage``, else 1)."""
        if isinstance(self.loss, StackelbergActorLoss):
            return self.loss.advantage_scale(advantage)
        if getattr(self.loss, "normalize_advantage", False) and advantage.numel() > 1:
            return advantage.std().clamp_min(torch.finfo(torch.float).resolution)  # as torchrl's _standardize
        return torch.ones((), dtype=advantage.dtype, device=advantage.device)

    @property
    def gamma(self) -> float | None:
        return getattr(self.loss.value_estimator, "gamma", None) if self.loss.value_estimator is not None else None

    def follower(self) -> CriticLoss:
        """A :class:`CriticLoss` on the leader's critic, reading its value and value-target keys."""
        follower = CriticLoss(self.critic)
        follower.set_keys(value=self.keys.value, value_target=self.keys.value_target)
        return follower


def as_leader(loss: LossModule) -> Leader:
    """The :class:`Leader` view of ``loss``; raises TypeError for an unsupported loss."""
    if isinstance(loss, StackelbergActorLoss):
        return Leader(loss, loss.actor_network, loss.critic_network, importance_weighted=False)
    if isinstance(loss, A2CLoss | PPOLoss):
        if getattr(loss, "advantage_norm", None) is not None:
            raise ValueError("a leader loss with advantage_norm is not supported; use normalize_advantage.")
        if getattr(loss, "critic_network", None) is None:
            raise ValueError(f"the {type(loss).__name__} has no critic: pass critic_loss= for the follower.")
        if getattr(loss, "normalize_advantage_exclude_dims", ()):
            raise ValueError("normalize_advantage_exclude_dims is not supported by the Stackelberg correction.")
        return Leader(loss, loss.actor_network, loss.critic_network, importance_weighted=isinstance(loss, PPOLoss))
    names = ", ".join(t.__name__ for t in LEADER_TYPES)
    raise TypeError(f"the leader's loss must be one of {names} (or a subclass); got {type(loss).__name__}.")
