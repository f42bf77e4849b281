"""The players' losses, the Stackelberg hook with its λ schedule, and the optimizers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from torchrl.modules import ProbabilisticActor, ValueOperator

from torchrl_stac import CriticLoss, ExponentialDecay, ImplicitGradientHook, StackelbergActorLoss
from torchrl_stac.regularization import Regularization


def make_regularization(cfg: DictConfig) -> Regularization:
    """λ: the constant ``regularization``, or with ``regularization_decay=exp``
    ``λ(update) = floor + (regularization − floor) · 2^(−update / half_life)``."""
    if cfg.regularization_decay == "none":
        return float(cfg.regularization)
    rate = 0.5 ** (1.0 / cfg.regularization_half_life)
    return ExponentialDecay(start=cfg.regularization, floor=cfg.regularization_floor, rate=rate)


def make_losses(
    cfg: DictConfig, actor: ProbabilisticActor, critic: ValueOperator
) -> tuple[StackelbergActorLoss, CriticLoss, ImplicitGradientHook | None]:
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
            regularization=make_regularization(cfg),
            max_iter=cfg.cg_iterations,
            hessian=cfg.hessian,
            curvature_fallback=cfg.curvature_fallback,
            start_states=cfg.start_states,
            on_nonfinite="skip",
        )
    return actor_loss, critic_loss, hook


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """``sgd`` (the paper's plain gradient steps) or ``adam``."""
    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr)
