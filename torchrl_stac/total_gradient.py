"""The leader's total derivative in a two-player game, both losses by ordinary autograd (docs/math.md §5).

``∇₁f_L − (∇₁₂f_F)(∇₂₂f_F + λI)⁻¹ ∇₂f_L``: both losses are minimised, parameters 1 are the
leader's, 2 the follower's; the mixed product is the double backward ``∇₁(∇₂f_F · x)``. Either
player may lead. :func:`total_gradient` is the core that :class:`~torchrl_stac.StackelbergUpdate`
runs every corrected update; :func:`leader_total_gradient` is its one-call form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from torchrl_stac.curvature import MatVec, flatten, hvp_from_grad, unflatten
from torchrl_stac.follower_solver import FollowerSolver
from torchrl_stac.solvers import SolveResult


@dataclass
class TotalGradient:
    """One total-gradient computation.

    Attributes:
        partial: ∇₁f_L, flat over the leader's parameters (detached).
        correction: −(∇₁₂f_F) x, flat (zeros when skipped).
        follower_grad: ∇₂f_F, one tensor per follower parameter (detached).
        result: the solve of ``(H + λI) x = ∇₂f_L``.
        regularization: λ used.
        fell_back: the solve was redone with the Gauss-Newton matrix.
        skipped: the solve or the correction was not finite (the correction is then zero).
        eigenvalues: (smallest, largest) Ritz values of H, or None.
        bounded: the solver's ``correction_max_ratio`` scaled the correction down.
    """

    partial: torch.Tensor
    correction: torch.Tensor
    follower_grad: list[torch.Tensor]
    result: SolveResult
    regularization: float
    fell_back: bool
    skipped: bool
    eigenvalues: tuple[float, float] | None
    bounded: bool = False

    @property
    def total(self) -> torch.Tensor:
        return self.partial + self.correction


def total_gradient(
    f_leader: torch.Tensor,
    f_follower: torch.Tensor,
    leader_params: Sequence[torch.Tensor],
    follower_params: Sequence[torch.Tensor],
    solver: FollowerSolver,
    *,
    hessian: MatVec | None = None,
    gauss_newton: MatVec | None = None,
) -> TotalGradient:
    """The leader's total gradient on scalar losses ``f_leader`` and ``f_follower`` (graphs kept).

    λ comes from ``solver.next_regularization()`` (one update), raised by ``solver.regularize`` when
    it targets a condition number; the solver's bound then caps the correction. ``hessian``
    replaces the exact follower Hessian ``∇₂₂f_F`` in the solve (e.g. a Gauss-Newton or Fisher
    matrix); ``gauss_newton`` is the solver's curvature fallback.
    """
    lam = solver.next_regularization()
    grad_1 = torch.autograd.grad(f_leader, leader_params, retain_graph=True, materialize_grads=True)
    grad_2 = flatten(torch.autograd.grad(f_leader, follower_params, retain_graph=True, materialize_grads=True))
    follower_grad = torch.autograd.grad(f_follower, follower_params, create_graph=True, materialize_grads=True)
    if hessian is None:
        hessian = hvp_from_grad(follower_grad, follower_params)
    lam = solver.regularize(lam, hessian, grad_2)
    result, fell_back = solver.solve(hessian, grad_2, lam, gauss_newton)
    partial = flatten(grad_1).detach()
    correction = torch.zeros_like(partial)
    skipped = not torch.isfinite(result.solution).all()
    if not skipped:
        x = unflatten(result.solution.detach(), follower_params)
        inner = sum((g * xi).sum() for g, xi in zip(follower_grad, x, strict=True))
        correction = -flatten(torch.autograd.grad(inner, leader_params, retain_graph=True, materialize_grads=True))
        skipped = not torch.isfinite(correction).all()
    if skipped:
        solver.nonfinite("the Stackelberg correction", lam)
        correction = torch.zeros_like(partial)
    correction, bounded = solver.bound(partial, correction)
    eigenvalues = solver.logged_eigenvalues(hessian, grad_2)
    follower_grad = [g.detach() for g in follower_grad]
    return TotalGradient(partial, correction, follower_grad, result, lam, fell_back, skipped, eigenvalues, bounded)


def leader_total_gradient(
    leader_loss: Callable[[], torch.Tensor],
    follower_loss: Callable[[], torch.Tensor],
    leader_params: Sequence[torch.Tensor],
    follower_params: Sequence[torch.Tensor],
    solver: FollowerSolver | None = None,
) -> tuple[list[torch.Tensor], SolveResult]:
    """Total gradient of ``leader_loss()`` when the follower best-responds on ``follower_loss()``.

    ``solver`` defaults to an unregularised CG to tolerance 1e-10 without warm start. Returns the
    total gradient, one tensor per leader parameter, and the solve's report.
    """
    solver = solver or FollowerSolver(tol=1e-10, warm_start=False)
    step = total_gradient(leader_loss(), follower_loss(), leader_params, follower_params, solver)
    return unflatten(step.total, leader_params), step.result
