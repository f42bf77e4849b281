"""Trajectory boundaries in collector batches and the discounted forward cumulative sum.

Batches follow torchrl's layout: time is the last batch dimension (``[N]`` from one env,
``[B, T]`` from batched envs). A row may hold many episodes back to back.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives.value.functional import reward2go


def _flag(td: TensorDictBase, key: NestedKey) -> torch.Tensor | None:
    value = td.get(key, None)
    if value is None:
        return None
    return value.reshape(td.batch_size).bool()


def _shift_right(flags: torch.Tensor, fill: bool) -> torch.Tensor:
    """flags[..., t-1] at position t, ``fill`` at t = 0."""
    first = torch.full_like(flags[..., :1], fill)
    return torch.cat([first, flags[..., :-1]], dim=-1)


def segment_starts(
    td: TensorDictBase,
    *,
    done_key: NestedKey = ("next", "done"),
    traj_key: NestedKey = ("collector", "traj_ids"),
) -> torch.Tensor:
    """Boolean ``td.batch_size`` mask of the steps that begin a contiguous piece of trajectory.

    True at the first step of each row, after a step whose ``done_key`` is set
    (terminated or truncated), and where the trajectory id changes.
    """
    if td.batch_dims == 0:
        raise ValueError("expected a batch with a time dimension, got batch_size=[].")
    done = _flag(td, done_key)
    if done is None:
        raise KeyError(
            f"the batch has no {done_key!r} entry: trajectory boundaries cannot be found. "
            "Collector batches carry ('next', 'done'); pass done_key= for another key."
        )
    starts = _shift_right(done, True)
    traj_ids = td.get(traj_key, None)
    if traj_ids is not None:
        traj_ids = traj_ids.reshape(td.batch_size)
        changed = torch.ones_like(starts)
        changed[..., 1:] = traj_ids[..., 1:] != traj_ids[..., :-1]
        starts = starts | changed
    return starts


def episode_starts(
    td: TensorDictBase,
    *,
    done_key: NestedKey = ("next", "done"),
    init_key: NestedKey = "is_init",
    step_count_key: NestedKey = "step_count",
) -> torch.Tensor:
    """Boolean mask of the steps whose state is a true initial state s_0 of an episode.

    True after a done step within a row, and where ``is_init`` (torchrl's ``InitTracker``) is set
    or ``step_count`` (``StepCounter``) is 0. One of those two keys is required, since a row's
    first step may continue an episode begun in the previous batch.
    """
    done = _flag(td, done_key)
    if done is None:
        raise KeyError(f"the batch has no {done_key!r} entry: episode starts cannot be found.")
    starts = _shift_right(done, False)
    is_init = _flag(td, init_key)
    step_count = td.get(step_count_key, None)
    if is_init is None and step_count is None:
        raise KeyError(
            f"start_states='initial' needs {init_key!r} or {step_count_key!r} in the batch to "
            "recognise episode starts: add torchrl's InitTracker() or StepCounter() transform."
        )
    if is_init is not None:
        starts = starts | is_init
    if step_count is not None:
        starts = starts | (step_count.reshape(td.batch_size) == 0)
    return starts


def discounted_forward_cumsum(values: torch.Tensor, starts: torch.Tensor, gamma: float) -> torch.Tensor:
    """``C_t = Σ_{i ≤ t, same segment} γ^{t−i} values_i`` along the last dimension.

    ``starts`` (bool, same shape) marks the first step of each segment; the sum restarts there.
    O(N): computed as torchrl's ``reward2go`` on the time-reversed sequence, whose episode ends
    are the reversed segment starts. Terms with γ^k < 1e-7 are dropped by ``reward2go``.
    """
    if values.shape != starts.shape:
        raise ValueError(f"values {tuple(values.shape)} and starts {tuple(starts.shape)} differ.")
    flipped = values.flip(-1).unsqueeze(-1)
    ends = starts.flip(-1).unsqueeze(-1)
    return reward2go(flipped, ends, gamma, time_dim=-2).squeeze(-1).flip(-1)
