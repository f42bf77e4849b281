"""The players' losses (the paper's, or TorchRL's ClipPPOLoss), the Stackelberg hook, λ, optimizers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss, SACLoss, SoftUpdate
from torchrl.objectives.value import GAE

from torchrl_stac import (
    CriticLoss,
    ExponentialDecay,
    FollowerSolver,
    ImplicitGradientHook,
    StackelbergActorLoss,
    StackelbergDDPGLoss,
    StackelbergSACLoss,
    StackelbergTD3Loss,
    StackelbergUpdate,
    TwinQLoss,
)
from torchrl_stac.regularization import Regularization


def make_regularization(cfg: DictConfig) -> Regularization:
    """λ: the constant ``regularization``; with ``regularization_decay=exp``
    ``λ(update) = floor + (regularization − floor) · 2^(−update / half_life)``; with ``condition``
    the floor (the solver raises λ to the condition number's)."""
    if cfg.regularization_decay == "none":
        return float(cfg.regularization)
    if cfg.regularization_decay == "condition":
        return float(cfg.regularization_floor)
    return ExponentialDecay(cfg.regularization, cfg.regularization_floor, cfg.regularization_half_life)


def make_solver(cfg: DictConfig) -> FollowerSolver:
    """The follower's solver from the config: λ (constant, decaying or from the condition number),
    CG iterations, the curvature fallback, Lanczos eigenvalues, the bound on the correction; a
    non-finite solve skips the correction with a warning."""
    return FollowerSolver(
        make_regularization(cfg),
        cg_iterations=cfg.cg_iterations,
        # Gauss-Newton exists for a critic follower only: not when the critic leads (off-policy)
        curvature_fallback=cfg.curvature_fallback if cfg.get("leader", "actor") == "actor" else None,
        on_nonfinite="skip",
        eigenvalue_steps=cfg.get("eigenvalue_steps", 0),
        condition_number=cfg.condition_number if cfg.regularization_decay == "condition" else None,
        eigenvalue_every=cfg.eigenvalue_every,
        correction_max_ratio=cfg.correction_max_ratio,
    )


def hook_options(cfg: DictConfig) -> dict:
    """The hook's settings from the config (its solver, curvature, start states)."""
    return {
        "solver": make_solver(cfg),
        "hessian": cfg.hessian,
        "start_states": cfg.start_states,
        "regularization_scale": cfg.regularization_scale,
        "gamma": cfg.gamma,
    }


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
        hook = ImplicitGradientHook(actor_loss, critic_loss, **hook_options(cfg))
    return actor_loss, critic_loss, hook


def make_ppo_loss(
    cfg: DictConfig, actor: ProbabilisticActor, critic: ValueOperator
) -> tuple[ClipPPOLoss, GAE, ImplicitGradientHook | None]:
    """TorchRL's ClipPPOLoss (normalised advantages, l2 value loss), its GAE, and the hook for algo=stac.

    The hook's follower is PPO's own critic on GAE's value target; the follower's "k steps" are
    PPO's critic updates of the previous batch (the hook solves once per batch, before the epochs).
    """
    advantage = GAE(gamma=cfg.gamma, lmbda=cfg.gae_lambda, value_network=critic, average_gae=False)
    loss = ClipPPOLoss(
        actor,
        critic,
        clip_epsilon=cfg.ppo_clip_epsilon,
        entropy_bonus=cfg.entropy_coeff is not None,
        entropy_coeff=cfg.entropy_coeff or 0.0,
        critic_coeff=cfg.ppo_critic_coef,
        loss_critic_type="l2",
        normalize_advantage=True,
    )
    hook = None
    if cfg.algo == "stac":
        hook = ImplicitGradientHook(loss, **hook_options(cfg))  # follower: PPO's critic on GAE's target
    return loss, advantage, hook


def make_offpolicy(
    cfg: DictConfig, actor: TensorDictModule, critics: list[ValueOperator], action_spec
) -> tuple[TwinQLoss | TorchRLSAC, StackelbergUpdate | None]:
    """The two players of SAC, TD3 or DDPG (``algo``, with or without the ``st`` prefix) and, for the
    Stackelberg algos, the update with the configured leader; ``reference_loss``: TorchRL's SACLoss."""
    base = cfg.algo.removeprefix("st")
    if cfg.reference_loss:
        return TorchRLSAC(actor, critics[0], action_spec, cfg), None
    bounds = {"action_low": action_spec.space.low, "action_high": action_spec.space.high, "gamma": cfg.gamma}
    if base == "sac":
        loss = StackelbergSACLoss(
            actor, critics, gamma=cfg.gamma, alpha_init=cfg.alpha_init, fixed_alpha=cfg.fixed_alpha
        )
    elif base == "td3":
        loss = StackelbergTD3Loss(actor, critics, policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip, **bounds)
    else:
        loss = StackelbergDDPGLoss(actor, critics[0], **bounds)
    if cfg.algo == base:
        return loss, None
    update = StackelbergUpdate(
        loss, leader=cfg.leader, solver=make_solver(cfg), hessian=cfg.hessian, correction_every=cfg.correction_every
    )
    return loss, update


class TorchRLSAC(torch.nn.Module):
    """Plain SAC from TorchRL's own ``SACLoss`` (twin Q, l2 critic loss), with the interface the
    recipe's loop uses (``reference_loss=true``): a check of the base against our SAC losses.

    ``SACLoss`` builds its two Q networks from ``critic`` (each freshly initialised) and keeps its own
    target copies, which TorchRL's ``SoftUpdate`` averages with the config's τ.
    """

    def __init__(self, actor: ProbabilisticActor, critic: ValueOperator, action_spec, cfg: DictConfig):
        super().__init__()
        self.sac = SACLoss(
            actor,
            critic,
            num_qvalue_nets=2,
            loss_function="l2",
            alpha_init=cfg.alpha_init,
            fixed_alpha=cfg.fixed_alpha,
            action_spec=action_spec,
        )
        self.sac.make_value_estimator(gamma=cfg.gamma)
        self.target_update = SoftUpdate(self.sac, tau=cfg.tau)
        self._losses: TensorDictBase | None = None

    @property
    def actor_params(self) -> list[torch.nn.Parameter]:
        return list(self.sac.actor_network_params.values(True, True))

    @property
    def critic_params(self) -> list[torch.nn.Parameter]:
        return list(self.sac.qvalue_network_params.values(True, True))

    @property
    def log_alpha(self) -> torch.Tensor:
        return self.sac.log_alpha

    @property
    def alpha(self) -> torch.Tensor:
        return self.sac.log_alpha.detach().exp()

    def player_losses(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, None, torch.Tensor]:
        """``(loss_actor, None, loss_qvalue)`` of ``SACLoss`` on the minibatch (its own noise draws)."""
        self._losses = self.sac(tensordict)
        return self._losses["loss_actor"], None, self._losses["loss_qvalue"]

    def alpha_loss(self, tensordict: TensorDictBase, log_prob: None) -> torch.Tensor | None:
        """``SACLoss``'s temperature loss of the last ``player_losses`` call; None with a fixed α."""
        return None if self.sac.fixed_alpha else self._losses["loss_alpha"]

    def extra_outputs(self, tensordict: TensorDictBase, log_prob: None) -> dict[str, torch.Tensor]:
        return {key: self._losses[key].detach() for key in ("loss_alpha", "alpha", "entropy")}

    def update_targets(self, tau: float) -> None:
        """Q̄ ← (1 − τ) Q̄ + τ Q (``SoftUpdate``, built with the same ``tau``)."""
        self.target_update.step()


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, eps: float = 1e-8
) -> torch.optim.Optimizer:
    """``sgd`` (the paper's plain gradient steps) or ``adam`` (TorchRL's PPO recipe: eps=1e-5)."""
    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr, eps=eps)
