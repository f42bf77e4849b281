"""Stackelberg Actor-Critic (STAC) as TorchRL components."""

from torchrl_stac.curvature import exact_hvp, explicit_matrix, gauss_newton_hvp, jvp, vjp
from torchrl_stac.implicit import ImplicitGradientHook
from torchrl_stac.leader_follower import leader_total_gradient
from torchrl_stac.losses import CriticLoss, StackelbergActorLoss
from torchrl_stac.offpolicy import StackelbergSACLoss, StackelbergTD3Loss, StackelbergUpdate, plain_gradients
from torchrl_stac.regularization import ExponentialDecay
from torchrl_stac.solvers import SolveResult, conjugate_gradient, dense_solve, solve_regularized
from torchrl_stac.trajectories import discounted_forward_cumsum, episode_starts, segment_starts

__version__ = "0.1.0"

__all__ = [
    "CriticLoss",
    "ExponentialDecay",
    "ImplicitGradientHook",
    "SolveResult",
    "StackelbergActorLoss",
    "StackelbergSACLoss",
    "StackelbergTD3Loss",
    "StackelbergUpdate",
    "conjugate_gradient",
    "dense_solve",
    "discounted_forward_cumsum",
    "episode_starts",
    "exact_hvp",
    "explicit_matrix",
    "gauss_newton_hvp",
    "jvp",
    "leader_total_gradient",
    "plain_gradients",
    "segment_starts",
    "solve_regularized",
    "vjp",
]
