"""One value for everything about solving the follower's system ``(H + λI) x = b`` (docs/math.md §4).

The on-policy hook, the PPO leaders and the off-policy update each take a :class:`FollowerSolver`
and ask it for λ, a solve, a non-finite verdict and eigenvalue estimates; its ``state_dict`` holds
the update counter (which drives λ schedules) and the warm start.
"""

from __future__ import annotations

import math
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


LANCZOS_STEPS = 10  # Lanczos steps of the condition-number λ when eigenvalue_steps is not given
SAFE_CONDITION_NUMBER = 100.0  # FollowerSolver.safe(): κ of its λ
SAFE_CORRECTION_MAX_RATIO = 1.0  # FollowerSolver.safe(): ρ of its bound


def condition_regularization(mu_min: float, mu_max: float, condition_number: float, floor: float) -> float:
    """``max(floor, (μ_max − κ μ_min)/(κ − 1))``: the smallest λ ≥ floor with H + λI positive definite and
    cond(H + λI) ≤ κ, for H's extreme eigenvalues μ_min ≤ μ_max."""
    conditioned = (mu_max - condition_number * mu_min) / (condition_number - 1)
    if mu_min + conditioned <= 0:  # a flat spectrum (μ_min = μ_max): any shift past −μ_min will do
        conditioned = -mu_min + 1e-6 * max(1.0, abs(mu_min))
    return max(floor, conditioned)


class FollowerSolver:
    """Solves ``(H + λI) x = b`` for the follower's Hessian H, given ``v ↦ H v``.

    Args:
        regularization: λ ≥ 0: a float, or a callable ``update index -> λ`` such as
            :class:`~torchrl_stac.ExponentialDecay`. Large λ recovers the plain (partial) gradient.
            With ``condition_number`` it is the floor under the conditioned λ.
        method: ``"cg"`` (conjugate gradient on Hessian-vector products) or ``"dense"`` (the
            explicit matrix: small followers only).
        cg_iterations, tol: CG's iteration cap and relative-residual tolerance (1e-6: about float32).
        warm_start: start CG from the previous update's solution (kept only if it beats zero).
        curvature_fallback: ``"gauss_newton"``: when CG meets non-positive curvature, re-solve with
            the positive semi-definite Gauss-Newton matrix the caller offers (a squared-error
            follower: the critic); ``None``: keep CG's last iterate and flag it.
        on_nonfinite: ``"raise"`` a FloatingPointError on a non-finite solve or correction, or
            ``"skip"`` the correction (plain gradients) with a warning and ``skipped = 1``.
        eigenvalue_steps: Lanczos steps for the extreme eigenvalues μ_min, μ_max of H, logged per
            correction (0: not computed; with ``condition_number``: 10).
        condition_number: κ > 1: λ = max(regularization, (μ_max − κ μ_min)/(κ − 1)), the smallest λ
            with H + λI positive definite and cond(H + λI) ≤ κ (docs/math.md §4). None: λ as given.
        eigenvalue_every: with ``condition_number``, re-estimate μ_min, μ_max every n corrections
            (Lanczos, warm-started from the previous estimate's extreme Ritz vectors).
        correction_max_ratio: ρ > 0: scale the correction down to at most ρ × the partial
            gradient's norm (:meth:`bound`). None: unbounded.
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
        condition_number: float | None = None,
        eigenvalue_every: int = 1,
        correction_max_ratio: float | None = None,
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
        if condition_number is not None and not (math.isfinite(condition_number) and condition_number > 1):
            raise ValueError(f"condition_number must be a finite number > 1, got {condition_number}.")
        if eigenvalue_every < 1:
            raise ValueError(f"eigenvalue_every must be >= 1, got {eigenvalue_every}.")
        if correction_max_ratio is not None and not (math.isfinite(correction_max_ratio) and correction_max_ratio > 0):
            raise ValueError(f"correction_max_ratio must be a finite number > 0, got {correction_max_ratio}.")
        regularization_at(regularization, 0)  # fail now on a bad λ, not at the first update
        self.regularization = regularization
        self.method, self.cg_iterations, self.tol, self.warm_start = method, cg_iterations, tol, warm_start
        self.curvature_fallback, self.on_nonfinite = curvature_fallback, on_nonfinite
        self.condition_number, self.eigenvalue_every = condition_number, eigenvalue_every
        self.eigenvalue_steps = eigenvalue_steps or (LANCZOS_STEPS if condition_number is not None else 0)
        self.correction_max_ratio = correction_max_ratio
        self.num_updates = 0
        self.num_conditioned = 0  # corrections whose λ came from the condition number
        self.eigenvalues: tuple[float, float] | None = None  # the latest (μ_min, μ_max)
        self._previous_solution: torch.Tensor | None = None
        self._lanczos_start: torch.Tensor | None = None

    @classmethod
    def safe(cls, **options: Any) -> FollowerSolver:
        """The solver :class:`~torchrl_stac.ImplicitGradientHook` and
        :class:`~torchrl_stac.StackelbergUpdate` use when given none: λ from the conditioning
        (κ = 100, Lanczos every correction, no floor) and the correction bounded by the partial
        gradient g (ρ = 1), so the leader's step never opposes its own gradient:
        g·(g + c) ≥ ‖g‖(‖g‖ − ‖c‖) ≥ 0 (docs/math.md §4; measured in ``benchmarks/bench_dropin.py``).
        ``options`` set any other argument, or override these two."""
        defaults = {"condition_number": SAFE_CONDITION_NUMBER, "correction_max_ratio": SAFE_CORRECTION_MAX_RATIO}
        return cls(**{**defaults, **options})

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

    def regularize(self, lam: float, hvp: MatVec, start: torch.Tensor) -> float:
        """λ for the system ``(H + λI) x = b`` about to be solved, H given by ``hvp``.

        Without ``condition_number``: ``lam``. With κ: ``max(lam, (μ_max − κ μ_min)/(κ − 1))`` for
        H's extreme eigenvalues, re-estimated every ``eigenvalue_every`` calls (Lanczos from the
        previous estimate's Ritz vectors, else from ``start``). Lanczos' μ_min is an upper bound on
        λ_min(H), so H + λI can still be indefinite when the steps are too few; CG then flags it.
        """
        if self.condition_number is None:
            return lam
        if self.eigenvalues is None or self.num_conditioned % self.eigenvalue_every == 0:
            self.eigenvalues = self.extreme_eigenvalues(hvp, start)
        self.num_conditioned += 1
        return condition_regularization(*self.eigenvalues, self.condition_number, lam)

    def logged_eigenvalues(self, hvp: MatVec, start: torch.Tensor) -> tuple[float, float] | None:
        """(μ_min, μ_max) to report for this correction: the condition number's latest estimate, a
        fresh one when ``eigenvalue_steps`` > 0, or None."""
        if self.condition_number is not None:
            return self.eigenvalues
        return self.extreme_eigenvalues(hvp, start)

    def bound(self, partial: torch.Tensor, correction: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``(correction, bounded)``: the correction scaled to norm ≤ ρ‖partial‖ when
        ``correction_max_ratio = ρ`` is set and it is longer; ``bounded`` says whether it was."""
        if self.correction_max_ratio is None:
            return correction, False
        limit = self.correction_max_ratio * torch.linalg.vector_norm(partial)
        norm = torch.linalg.vector_norm(correction)
        if norm <= limit:
            return correction, False
        return correction * (limit / norm), True

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
        """(smallest, largest) Ritz values of H after ``eigenvalue_steps`` Lanczos steps, or None when
        ``eigenvalue_steps = 0``. The smallest is an upper bound on λ_min(H), the largest a lower
        bound on λ_max(H). Starts from the previous call's extreme Ritz vectors (their sum) when
        they fit, else from ``start``; full reorthogonalisation keeps the basis orthonormal."""
        steps = min(self.eigenvalue_steps, start.numel())
        if steps == 0:
            return None
        warm = self._lanczos_start
        q = (warm if warm is not None and warm.shape == start.shape else start).detach()
        q = q / q.norm().clamp_min(1e-30)
        basis, alphas, betas = [q], [], []
        for _ in range(steps):
            w = hvp(q).detach()
            alphas.append(float(q @ w))
            stacked = torch.stack(basis)
            w = w - stacked.T @ (stacked @ w)  # against every previous vector (twice: stable)
            w = w - stacked.T @ (stacked @ w)
            beta = float(w.norm())
            if beta < 1e-10 * max(1.0, abs(alphas[-1])) or len(basis) == steps:
                break
            betas.append(beta)
            q = w / beta
            basis.append(q)
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if len(alphas) > 1:
            off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz, vectors = torch.linalg.eigh(tridiagonal)
        extremes = vectors[:, [0, -1]].to(start.dtype).to(start.device)
        ritz_vectors = torch.stack(basis[: len(alphas)]).T @ extremes
        self._lanczos_start = ritz_vectors.sum(-1)
        if not torch.isfinite(self._lanczos_start).all() or self._lanczos_start.norm() < 1e-30:
            self._lanczos_start = None
        return float(ritz[0]), float(ritz[-1])

    def state_dict(self) -> dict[str, Any]:
        """The update counter (drives λ schedules), the CG warm start, and the condition-number λ's
        state (its call counter, latest eigenvalues and Lanczos start)."""
        return {
            "num_updates": self.num_updates,
            "previous_solution": self._previous_solution,
            "num_conditioned": self.num_conditioned,
            "eigenvalues": self.eigenvalues,
            "lanczos_start": self._lanczos_start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self._previous_solution = state["previous_solution"]
        self.num_conditioned = int(state.get("num_conditioned", 0))  # checkpoints before condition-λ lack it
        self.eigenvalues = state.get("eigenvalues")
        self._lanczos_start = state.get("lanczos_start")
