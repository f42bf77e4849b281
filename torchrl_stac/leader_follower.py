"""Generic two-player total derivative (STAC_MATH §5), both losses by ordinary autograd."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from torchrl_stac.curvature import flatten, hvp_from_grad, unflatten
from torchrl_stac.solvers import SolveResult, solve_regularized


def leader_total_gradient(
    leader_loss: Callable[[], torch.Tensor],
    follower_loss: Callable[[], torch.Tensor],
    leader_params: Sequence[torch.Tensor],
    follower_params: Sequence[torch.Tensor],
    *,
    regularization: float = 0.0,
    solver: Literal["cg", "dense"] = "cg",
    max_iter: int = 10,
    tol: float = 1e-10,
) -> tuple[list[torch.Tensor], SolveResult]:
    """Total gradient of the leader's loss when the follower best-responds.

    ``∇₁f_L − (∇₁₂f_F)(∇₂₂f_F + λI)⁻¹ ∇₂f_L``, both losses minimised, parameters 1 = leader,
    2 = follower. The mixed product is the double backward ``∇₁(∇₂f_F · x)``. Either player may
    lead: swap the roles to make the critic the leader.

    Args:
        leader_loss, follower_loss: closures returning scalar losses that depend on both sets.
        leader_params, follower_params: the two disjoint parameter lists.
        regularization: λ ≥ 0 added to the follower's Hessian.
        solver: ``"cg"`` (Hessian-vector products) or ``"dense"`` (explicit Hessian).

    Returns:
        The total gradient, one tensor per leader parameter, and the solve's report.
    """
    f_leader = leader_loss()
    grad_1 = torch.autograd.grad(f_leader, leader_params, retain_graph=True, materialize_grads=True)
    grad_2 = flatten(torch.autograd.grad(f_leader, follower_params, materialize_grads=True))
    f_follower = follower_loss()
    follower_grad = torch.autograd.grad(f_follower, follower_params, create_graph=True, materialize_grads=True)
    hessian = hvp_from_grad(follower_grad, follower_params)
    result = solve_regularized(hessian, grad_2, regularization, solver=solver, max_iter=max_iter, tol=tol)
    x = unflatten(result.solution.detach(), follower_params)
    inner = sum((g * xi).sum() for g, xi in zip(follower_grad, x, strict=True))
    mixed = torch.autograd.grad(inner, leader_params, materialize_grads=True)
    total = [g1 - m for g1, m in zip(grad_1, mixed, strict=True)]
    return total, result
