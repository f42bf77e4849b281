"""Schedules for the Hessian regulariser λ (docs/math.md §4)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExponentialDecay:
    """``λ(step) = floor + (start − floor) · 2^(−step / half_life)``: decays from ``start`` towards
    ``floor``, halving the distance every ``half_life`` updates.

    The paper's §5 suggests decaying the regularisation as training nears an equilibrium.
    """

    start: float
    floor: float = 0.0
    half_life: float = 100.0

    def __post_init__(self):
        if self.start < 0 or self.floor < 0:
            raise ValueError(f"regularization must be >= 0, got start={self.start}, floor={self.floor}.")
        if not self.half_life > 0:
            raise ValueError(f"half_life must be > 0, got {self.half_life}.")

    def __call__(self, step: int) -> float:
        return self.floor + (self.start - self.floor) * 0.5 ** (step / self.half_life)


Regularization = float | Callable[[int], float]


def regularization_at(regularization: Regularization, step: int) -> float:
    """λ at update ``step``; raises on a negative or non-finite value."""
    value = float(regularization(step) if callable(regularization) else regularization)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"regularization λ must be a finite number >= 0, got {value} at step {step}.")
    return value
