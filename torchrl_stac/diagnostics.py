"""The diagnostics every Stackelberg correction reports, and option checking shared by the updates."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_stac.solvers import SolveResult


def check_choices(options: dict[str, Any], choices: dict[str, tuple]) -> None:
    """Raise a ValueError naming the option, the value and the choices for the first unknown value."""
    for name, value in options.items():
        if value not in choices[name]:
            raise ValueError(f"unknown {name} {value!r}: choose one of {choices[name]}.")


def solve_diagnostics(
    lam: float,
    result: SolveResult,
    fell_back: bool,
    skipped: bool,
    eigenvalues: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The solve's report: iterations, relative residual, curvature flag, Gauss-Newton fallback, λ,
    and the follower Hessian's estimated extreme eigenvalues when there are some."""
    values = {
        "solver_iterations": float(result.iterations),
        "relative_residual": result.relative_residual,
        "nonpositive_curvature": float(result.nonpositive_curvature),
        "gauss_newton_fallback": float(fell_back),
        "regularization": lam,
        "skipped": float(skipped),
    }
    if eigenvalues is not None:
        values["hessian_eigenvalue_min"], values["hessian_eigenvalue_max"] = eigenvalues
    return values


def gradient_diagnostics(
    partial: torch.Tensor, correction: torch.Tensor, skipped: bool, bounded: bool = False
) -> dict[str, Any]:
    """‖partial‖, ‖correction‖ (as applied), ‖total‖, their ratio, the cosine between partial and
    total, and whether the bound ``correction_max_ratio`` scaled the correction down."""
    total = partial + correction
    partial_norm = torch.linalg.vector_norm(partial)
    implicit_norm = torch.linalg.vector_norm(correction)
    return {
        "implicit_norm": implicit_norm,
        "partial_norm": partial_norm,
        "total_norm": torch.linalg.vector_norm(total),
        "correction_ratio": implicit_norm / partial_norm.clamp_min(1e-12),
        "cosine_partial_total": torch.nn.functional.cosine_similarity(partial, total, dim=0, eps=1e-12),
        "correction_bounded": float(bounded),
        "skipped": float(skipped),
    }


def as_tensordict(values: dict[str, Any]) -> TensorDictBase:
    """Scalar float32 entries, detached."""
    return TensorDict({k: torch.as_tensor(v, dtype=torch.float32).detach() for k, v in values.items()}, batch_size=[])
