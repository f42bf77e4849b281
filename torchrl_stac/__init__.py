"""Stackelberg Actor-Critic (STAC) as TorchRL components."""

from torchrl_stac.curvature import exact_hvp, explicit_matrix, fisher_hvp, gauss_newton_hvp, jvp, vjp
from torchrl_stac.follower_solver import FollowerSolver
from torchrl_stac.implicit_hook import ImplicitGradientHook
from torchrl_stac.offpolicy_losses import StackelbergDDPGLoss, StackelbergSACLoss, StackelbergTD3Loss, TwinQLoss
from torchrl_stac.offpolicy_update import StackelbergUpdate, plain_gradients
from torchrl_stac.onpolicy_losses import CriticLoss, StackelbergActorLoss
from torchrl_stac.regularization import ExponentialDecay
from torchrl_stac.solvers import SolveResult, conjugate_gradient, dense_solve, solve_regularized
from torchrl_stac.total_gradient import TotalGradient, leader_total_gradient, total_gradient
from torchrl_stac.trajectories import discounted_forward_cumsum, episode_starts, segment_starts

__version__ = "0.1.0"

__all__ = [
    "CriticLoss",
    "ExponentialDecay",
    "FollowerSolver",
    "ImplicitGradientHook",
    "SolveResult",
    "StackelbergActorLoss",
    "StackelbergDDPGLoss",
    "StackelbergSACLoss",
    "StackelbergTD3Loss",
    "StackelbergUpdate",
    "TotalGradient",
    "TwinQLoss",
    "conjugate_gradient",
    "dense_solve",
    "discounted_forward_cumsum",
    "episode_starts",
    "exact_hvp",
    "explicit_matrix",
    "fisher_hvp",
    "gauss_newton_hvp",
    "jvp",
    "leader_total_gradient",
    "plain_gradients",
    "segment_starts",
    "solve_regularized",
    "total_gradient",
    "vjp",
]
