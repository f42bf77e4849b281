"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in double precision (for comparisons at 1e-7 and below)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
