"""Trajectory resets in the discounted forward cumulative sum, on synthetic and real collector batches."""

from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs import Compose, GymEnv, InitTracker, StepCounter, TransformedEnv
from torchrl.envs.utils import RandomPolicy

from torchrl_stac import discounted_forward_cumsum, episode_starts, segment_starts


def loop_cumsum(values, done, traj_ids, gamma):
    """Reference: per row, C_t = c_t + γ C_{t−1} unless t starts a new piece (explicit loop)."""
    out = torch.zeros_like(values)
    rows, T = values.reshape(-1, values.shape[-1]).shape
    v, d, ids, o = (x.reshape(rows, T) for x in (values, done, traj_ids, out))
    for r in range(rows):
        for t in range(T):
            new_piece = t == 0 or bool(d[r, t - 1]) or ids[r, t] != ids[r, t - 1]
            o[r, t] = v[r, t] + (0.0 if new_piece else gamma * o[r, t - 1])
    return o.reshape(values.shape)


def test_mid_batch_terminations_and_truncations():
    values = torch.arange(1.0, 11.0, dtype=torch.float64)
    done = torch.zeros(10, dtype=torch.bool)
    done[2] = True  # terminated
    done[6] = True  # truncated: the cumulative sum resets all the same
    ids = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), done[:-1].long()]), 0)
    starts = torch.zeros(10, dtype=torch.bool)
    starts[[0, 3, 7]] = True
    got = discounted_forward_cumsum(values, starts, 0.5)
    expected = torch.tensor([1, 2.5, 4.25, 4, 7, 9.5, 11.75, 8, 13, 16.5], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, loop_cumsum(values, done, ids, 0.5))


@pytest.fixture(scope="module")
def collector_batch():
    """A [B, T] batch from a real Collector over 2 batched CartPole envs with short episodes."""
    from torchrl.envs import SerialEnv

    def make_env():
        return TransformedEnv(GymEnv("CartPole-v1"), Compose(StepCounter(max_steps=7), InitTracker()))

    env = SerialEnv(2, make_env)
    env.set_seed(0)
    collector = Collector(env, RandomPolicy(env.action_spec), frames_per_batch=60, total_frames=120)
    batches = list(collector)
    collector.shutdown()
    return batches[1]  # the second batch starts mid-episode in each row


def test_collector_batch_resets(collector_batch):
    td = collector_batch
    assert td.batch_dims == 2 and td["next", "done"].any()
    values = torch.randn(td.batch_size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    done = td["next", "done"].squeeze(-1)
    ids = td["collector", "traj_ids"]
    starts = segment_starts(td)
    expected = loop_cumsum(values, done, ids, 0.9)
    torch.testing.assert_close(discounted_forward_cumsum(values, starts, 0.9), expected)
    # truncation by StepCounter(max_steps=7) ends pieces too
    assert td["next", "truncated"].any()


def test_episode_starts_on_collector_batch(collector_batch):
    td = collector_batch
    initial = episode_starts(td)
    assert torch.equal(initial, td["step_count"].squeeze(-1) == 0)
    assert torch.equal(initial, td["is_init"].squeeze(-1))
    assert (initial <= segment_starts(td)).all()  # every episode start begins a piece
    assert not initial[:, 0].all()  # rows resume episodes begun in the previous batch


def test_episode_starts_needs_a_marker(collector_batch):
    with pytest.raises(KeyError, match="StepCounter"):
        episode_starts(collector_batch.exclude("step_count", "is_init"))
