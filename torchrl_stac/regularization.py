"""Schedules for the Hessian regulariser λ (STAC_MATH §4)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExponentialDecay:
    """``λ(step) = floor + (start − floor) · rate^step``: decays from ``start`` towards ``floor``.

    The paper's §5 suggests decaying the regularisation as training nears an equilibrium.
    """

    start: float
    floor: float = 0.0
    rate: float = 0.99

    def __post_init__(self):
        if self.start < 0 or self.floor < 0:
            raise ValueError(f"regularization must be >= 0, got start={self.start}, floor={self.floor}.")
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}.")

    def __call__(self, step: int) -> float:
        return self.floor + (self.start - self.floor) * self.rate**step


Regularization = float | Callable[[int], float]


def regularization_at(regularization: Regularization, step: int) -> float:
    """λ at update ``step``; raises on a negative or non-finite value."""
    value = float(regularization(step) if callable(regularization) else regularization)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"regularization λ must be a finite number >= 0, got {value} at step {step}.")
    return value
