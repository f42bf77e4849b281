"""One value for everything about solving the follower's system ``(H + λI) x = b`` (docs/math.md §4).

The on-policy hook, the PPO leaders and the off-policy update each take a :class:`FollowerSolver`
and ask it for λ, a solve, a non-finite verdict and eigenvalue estimates; its ``state_dict`` holds
the update counter (which drives λ schedules) and the warm start.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

from torchrl_stac.curvature import MatVec
from torchrl_stac.regularization import Regularization, regularization_at
from torchrl_stac.solvers import SolveResult, solve_regularized

_CHOICES = {
    "method": ("cg", "dense"),
    "curvature_fallback": (None, "gauss_newton"),
    "on_nonfinite": ("raise", "skip"),
}


class FollowerSolver:
    """Solves ``(H + λI) x = b`` for the follower's Hessian H, given ``v ↦ H v``.

    Args:
        regularization: λ ≥ 0: a float, or a callable ``update index -> λ`` such as
            :class:`~torchrl_stac.ExponentialDecay`. Large λ recovers the plain (partial) gradient.
        method: ``"cg"`` (conjugate gradient on Hessian-vector products) or ``"dense"`` (the
            explicit matrix: small followers only).
        cg_iterations, tol: CG's iteration cap and relative-residual tolerance (1e-6: about float32).
        warm_start: start CG from the previous update's solution (kept only if it beats zero).
        curvature_fallback: ``"gauss_newton"``: when CG meets non-positive curvature, re-solve with
            the positive semi-definite Gauss-Newton matrix the caller offers (a squared-error
            follower: the critic); ``None``: keep CG's last iterate and flag it.
        on_nonfinite: ``"raise"`` a FloatingPointError on a non-finite solve or correction, or
            ``"skip"`` the correction (plain gradients) with a warning and ``skipped = 1``.
        eigenvalue_steps: Lanczos steps for the extreme eigenvalues of H, logged per correction
            (0: not computed).
    """

    def __init__(
        self,
        regularization: Regularization = 0.0,
        *,
        method: Literal["cg", "dense"] = "cg",
        cg_iterations: int = 10,
        tol: float = 1e-6,
        warm_start: bool = True,
        curvature_fallback: Literal["gauss_newton"] | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        eigenvalue_steps: int = 0,
    ):
        options = {"method": method, "curvature_fallback": curvature_fallback, "on_nonfinite": on_nonfinite}
        for name, value in options.items():
            if value not in _CHOICES[name]:
                raise ValueError(f"unknown {name} {value!r}: choose one of {_CHOICES[name]}.")
        if cg_iterations < 1:
            raise ValueError(f"cg_iterations must be >= 1, got {cg_iterations}.")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}.")
        if eigenvalue_steps < 0:
            raise ValueError(f"eigenvalue_steps must be >= 0, got {eigenvalue_steps}.")
        regularization_at(regularization, 0)  # fail now on a bad λ, not at the first update
        self.regularization = regularization
        self.method, self.cg_iterations, self.tol, self.warm_start = method, cg_iterations, tol, warm_start
        self.curvature_fallback, self.on_nonfinite = curvature_fallback, on_nonfinite
        self.eigenvalue_steps = eigenvalue_steps
        self.num_updates = 0
        self._previous_solution: torch.Tensor | None = None

    def next_regularization(self) -> float:
        """λ for this update; advances the update counter (call once per update)."""
        lam = regularization_at(self.regularization, self.num_updates)
        self.num_updates += 1
        return lam

    def solve(
        self, hvp: MatVec, rhs: torch.Tensor, lam: float, gauss_newton: MatVec | None = None
    ) -> tuple[SolveResult, bool]:
        """``(x, fell_back)``: x solves ``(H + λI) x = rhs``; ``fell_back`` when it was re-solved with
        ``gauss_newton`` (offered by a squared-error follower) after non-positive curvature.

        The Gauss-Newton re-solve starts from zero. A finite solution becomes the next warm start; a
        non-finite one clears it (see :meth:`nonfinite`).
        """
        x0 = self._previous_solution
        if not self.warm_start or x0 is None or x0.shape != rhs.shape:
            x0 = None
        options = {"solver": self.method, "max_iter": self.cg_iterations, "tol": self.tol, "x0": x0}
        result = solve_regularized(hvp, rhs, lam, **options)
        fell_back = bool(result.nonpositive_curvature and self.curvature_fallback and gauss_newton is not None)
        if fell_back:
            result = solve_regularized(gauss_newton, rhs, lam, **{**options, "x0": None})  # another matrix: cold
        finite = bool(torch.isfinite(result.solution).all())
        self._previous_solution = result.solution.detach() if finite else None
        return result, fell_back

    def nonfinite(self, what: str, lam: float | None = None) -> None:
        """Raise (``on_nonfinite="raise"``) or warn that ``what`` is not finite; the caller then skips
        the correction. The warm start is dropped either way."""
        self._previous_solution = None
        at = f" (λ = {lam})" if lam is not None else ""
        message = f"non-finite values in {what} at update {self.num_updates - 1}{at}."
        if self.on_nonfinite == "raise":
            raise FloatingPointError(message + " Raise the regularization or lower the learning rates.")
        warnings.warn(message + " The Stackelberg correction was skipped for this update.", stacklevel=3)

    def extreme_eigenvalues(self, hvp: MatVec, start: torch.Tensor) -> tuple[float, float] | None:
        """(smallest, largest) Ritz values of H after ``eigenvalue_steps`` Lanczos steps from ``start``,
        or None when ``eigenvalue_steps = 0``. The smallest is an upper bound on λ_min(H)."""
        steps = min(self.eigenvalue_steps, start.numel())
        if steps == 0:
            return None
        q = start / start.norm().clamp_min(1e-30)
        previous = torch.zeros_like(q)
        alphas, betas = [], []
        beta = 0.0
        for _ in range(steps):
            w = hvp(q).detach() - beta * previous
            alpha = float(q @ w)
            w = w - alpha * q
            alphas.append(alpha)
            beta = float(w.norm())
            if beta < 1e-10:
                break
            betas.append(beta)
            previous, q = q, w / beta
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if len(alphas) > 1:
            off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz = torch.linalg.eigvalsh(tridiagonal)
        return float(ritz[0]), float(ritz[-1])

    def state_dict(self) -> dict[str, Any]:
        """The update counter (drives λ schedules) and the CG warm start."""
        return {"num_updates": self.num_updates, "previous_solution": self._previous_solution}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self._previous_solution = state["previous_solution"]
