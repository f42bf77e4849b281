"""Solvers for the regularised critic system ``(H + λI) x = b``.

Vectors are flat 1-D tensors over the critic's parameters (see :mod:`torchrl_stac.curvature`
for the flattening helpers). ``matvec`` maps such a vector ``v`` to ``(H + λI) v``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchrl_stac.curvature import MatVec, explicit_matrix


@dataclass
class SolveResult:
    """Outcome of a linear solve.

    Attributes:
        solution: x, same shape as the right-hand side b.
        iterations: CG iterations run (0 for the dense solver).
        relative_residual: ‖A x − b‖ / ‖b‖ (0 when b = 0). For CG this is the recurrence
            residual, equal to the true one in exact arithmetic.
        nonpositive_curvature: True when A was found not positive definite: CG met a direction
            with pᵀAp ≤ 0 and stopped there, or the dense Cholesky factorisation failed.
    """

    solution: torch.Tensor
    iterations: int
    relative_residual: float
    nonpositive_curvature: bool


def conjugate_gradient(
    matvec: MatVec,
    b: torch.Tensor,
    *,
    max_iter: int = 10,
    tol: float = 1e-10,
    x0: torch.Tensor | None = None,
) -> SolveResult:
    """Solve ``A x = b`` for symmetric ``A`` given only ``v ↦ A v``.

    Stops after ``max_iter`` iterations, when ``‖r‖ ≤ tol ‖b‖``, or on a direction with
    non-positive curvature (the flag is then set), and returns the last iterate. On a positive-
    definite A each step lowers the model φ(x) = ½xᵀAx − bᵀx, i.e. the A-norm error, but not
    necessarily the residual: with cond(A) ≈ 100 the first iterates can all have ‖r‖ > ‖b‖ while
    being far better than x = 0. If ``matvec`` produces non-finite values the solution is NaN, for
    the caller to reject.

    Args:
        matvec: ``v ↦ A v`` on flat vectors.
        b: right-hand side, 1-D.
        max_iter: iteration cap (each iteration costs one ``matvec``).
        tol: relative residual tolerance.
        x0: warm start (e.g. the previous update's solution); zeros if ``None``, or if the warm
            start's model φ(x0) is not below φ(0) = 0 (it would be worse than starting from zero).
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}.")
    b_norm = torch.linalg.vector_norm(b)
    if b_norm == 0:
        return SolveResult(torch.zeros_like(b), 0, 0.0, False)
    x, r = torch.zeros_like(b), b.clone()
    if x0 is not None:
        if x0.shape != b.shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, b has {tuple(b.shape)}.")
        warm_residual = b - matvec(x0)
        if -0.5 * x0.dot(b + warm_residual) < 0:  # keep it only if φ(x0) = −½x0ᵀ(b + r0) beats φ(0) = 0
            x, r = x0.clone(), warm_residual
    p = r.clone()
    rr = r.dot(r)
    iterations = 0
    nonpositive = False
    for _ in range(max_iter):
        if rr.sqrt() <= tol * b_norm:
            break
        ap = matvec(p)
        curvature = p.dot(ap)
        if not torch.isfinite(curvature):  # report it as NaN: the caller raises or skips
            return SolveResult(torch.full_like(b, float("nan")), iterations, float("nan"), nonpositive)
        if curvature <= 0:
            nonpositive = True
            break
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        iterations += 1
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return SolveResult(x, iterations, float(rr.sqrt() / b_norm), nonpositive)


def dense_solve(matrix: torch.Tensor, b: torch.Tensor) -> SolveResult:
    """Reference solve of ``matrix @ x = b`` with an explicit symmetric matrix.

    Uses a Cholesky factorisation; when the matrix is not positive definite it sets the
    curvature flag and falls back to an LU solve (``torch.linalg.solve``).
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != b.numel():
        raise ValueError(f"dense_solve needs a square [{b.numel()}, {b.numel()}] matrix, got {tuple(matrix.shape)}.")
    factor, info = torch.linalg.cholesky_ex(matrix)
    nonpositive = bool(info != 0)
    if nonpositive:
        x = torch.linalg.solve(matrix, b)
    else:
        x = torch.cholesky_solve(b.unsqueeze(-1), factor).squeeze(-1)
    b_norm = torch.linalg.vector_norm(b)
    residual = torch.linalg.vector_norm(matrix @ x - b)
    relative = float(residual / b_norm) if b_norm > 0 else float(residual)
    return SolveResult(x, 0, relative, nonpositive)


def solve_regularized(
    hvp: MatVec,
    b: torch.Tensor,
    regularization: float,
    *,
    solver: str = "cg",
    max_iter: int = 10,
    tol: float = 1e-10,
    x0: torch.Tensor | None = None,
) -> SolveResult:
    """Solve ``(H + λI) x = b`` given ``v ↦ H v``: by CG, or densely on the materialised matrix.

    ``x0`` (a warm start) and ``max_iter``/``tol`` apply to CG only.
    """
    if regularization < 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}.")
    if solver not in ("cg", "dense"):
        raise ValueError(f"unknown solver {solver!r}: use 'cg' or 'dense'.")

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        return hvp(vector) + regularization * vector

    if solver == "dense":
        return dense_solve(explicit_matrix(matvec, b.numel(), b), b)
    return conjugate_gradient(matvec, b, max_iter=max_iter, tol=tol, x0=x0)
