"""Hessian-vector products, Jacobian-vector products and flat-vector helpers, by autograd.

All vectors are flat 1-D tensors over a list of parameters ``params`` (concatenated in order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into tensors shaped like ``like``."""
    sizes = [t.numel() for t in like]
    if vector.numel() != sum(sizes):
        raise ValueError(f"vector has {vector.numel()} entries, parameters have {sum(sizes)}.")
    return [chunk.view_as(t) for chunk, t in zip(torch.split(vector, sizes), like, strict=True)]


def exact_hvp(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> MatVec:
    """``v ↦ ∇²loss · v`` by double backward. The gradient graph is built once."""
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    return hvp_from_grad(grads, params)


def hvp_from_grad(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> MatVec:
    """``v ↦ ∂(grads · v)/∂params`` for gradients built with ``create_graph=True``."""

    def hvp(vector: torch.Tensor) -> torch.Tensor:
        out = torch.autograd.grad(
            grads, params, grad_outputs=unflatten(vector, grads), retain_graph=True, materialize_grads=True
        )
        return flatten(out)

    return hvp


def fisher_hvp(policy: torch.distributions.Normal, params: Sequence[torch.Tensor]) -> MatVec:
    """``v ↦ F v`` for the Fisher information of a diagonal Gaussian policy over a batch of states.

    ``policy``: ``Normal(loc, scale)`` of shape ``[*B, A]``, differentiable in ``params``. F is the
    Hessian at θ̄ = θ of ``mean_B Σ_A KL(π_θ̄ ‖ π_θ)``, θ̄ held fixed: positive semi-definite by
    construction, ``E[J_μᵀ diag(1/σ²) J_μ + J_σᵀ diag(2/σ²) J_σ]``. (A tanh squash leaves the KL,
    hence F, unchanged.)
    """
    fixed = torch.distributions.Normal(policy.loc.detach(), policy.scale.detach())
    kl = torch.distributions.kl_divergence(fixed, policy).sum(-1).mean()
    return hvp_from_grad(torch.autograd.grad(kl, params, create_graph=True, materialize_grads=True), params)


def jvp(outputs: torch.Tensor, params: Sequence[torch.Tensor]) -> MatVec:
    """``v ↦ (∂outputs/∂params) · v`` (shape of ``outputs``), by the double-vjp trick."""
    return vjp_then_jvp(outputs, params, torch.zeros_like(outputs))[1]


def vjp_then_jvp(
    outputs: torch.Tensor, params: Sequence[torch.Tensor], cotangent: torch.Tensor
) -> tuple[torch.Tensor, MatVec]:
    """``(Jᵀ u, v ↦ J v)`` with ``J = ∂outputs/∂params`` from a single vector-Jacobian graph.

    ``Jᵀ u`` is linear in ``u``, so differentiating it with respect to ``u`` along ``v`` gives
    ``J v`` whatever ``u`` is: one backward graph serves both products.
    """
    cotangent = cotangent.detach().requires_grad_(True)
    vjp_graph = torch.autograd.grad(outputs, params, grad_outputs=cotangent, create_graph=True, materialize_grads=True)

    def product(vector: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(vjp_graph, cotangent, grad_outputs=unflatten(vector, params), retain_graph=True)
        return out

    return flatten(vjp_graph).detach(), product


def vjp(outputs: torch.Tensor, params: Sequence[torch.Tensor]) -> MatVec:
    """``u ↦ (∂outputs/∂params)ᵀ u`` as a flat vector (``u`` shaped like ``outputs``)."""

    def product(cotangent: torch.Tensor) -> torch.Tensor:
        out = torch.autograd.grad(outputs, params, grad_outputs=cotangent, retain_graph=True, materialize_grads=True)
        return flatten(out)

    return product


def gauss_newton_hvp(
    outputs: torch.Tensor, params: Sequence[torch.Tensor], scale: float, forward: MatVec | None = None
) -> MatVec:
    """``v ↦ scale · JᵀJ v`` with ``J = ∂outputs/∂params`` (flattened over ``outputs``).

    For ``L = (1/N) Σ (V_i − G_i)²`` the Gauss-Newton matrix is ``(2/N) JᵀJ``: pass
    ``scale = 2 / N``. Positive semi-definite by construction. ``forward`` is an existing
    ``v ↦ J v`` (e.g. from :func:`vjp_then_jvp`) to reuse instead of building another graph.
    """
    forward = forward if forward is not None else jvp(outputs, params)
    backward = vjp(outputs, params)

    def hvp(vector: torch.Tensor) -> torch.Tensor:
        return scale * backward(forward(vector))

    return hvp


def explicit_matrix(matvec: MatVec, size: int, like: torch.Tensor) -> torch.Tensor:
    """Materialise the ``size × size`` matrix of a linear map column by column.

    Costs ``size`` products: meant for small critics and as a test reference.
    """
    eye = torch.eye(size, dtype=like.dtype, device=like.device)
    return torch.stack([matvec(column) for column in eye], dim=1)
