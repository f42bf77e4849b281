"""Builders and independent reference computations shared by the tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import MLP, OneHotCategorical, ProbabilisticActor, TanhNormal, ValueOperator

OBS, ACT, HIDDEN = 3, 2, 3


def make_actor(kind: str, obs_dim: int = OBS, act_dim: int = ACT, hidden: int = HIDDEN):
    """A small tanh actor: 'tanh_normal', 'normal', 'categorical' or 'one_hot'."""
    if kind in ("tanh_normal", "normal"):
        net = nn.Sequential(
            MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=[hidden], activation_class=nn.Tanh),
            NormalParamExtractor(),
        )
        module = TensorDictModule(net, ["observation"], ["loc", "scale"])
        dist = TanhNormal if kind == "tanh_normal" else torch.distributions.Normal
        return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=dist, return_log_prob=True)
    net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=[hidden], activation_class=nn.Tanh)
    module = TensorDictModule(net, ["observation"], ["logits"])
    dist = torch.distributions.Categorical if kind == "categorical" else OneHotCategorical
    return ProbabilisticActor(module, in_keys=["logits"], distribution_class=dist, return_log_prob=True)


def make_critic(kind: str, obs_dim: int = OBS, act_dim: int = ACT, hidden: int = HIDDEN):
    """A small tanh V critic ('v') or Q critic on (observation, action) ('q')."""
    in_features = obs_dim + (act_dim if kind == "q" else 0)
    net = MLP(in_features=in_features, out_features=1, num_cells=[hidden], activation_class=nn.Tanh)
    in_keys = ["observation", "action"] if kind == "q" else ["observation"]
    return ValueOperator(net, in_keys=in_keys)


def make_batch(actor, batch_shape, *, seed: int = 0, obs_dim: int = OBS) -> TensorDict:
    """A collector-like batch (time last) with mid-row terminations, truncations and traj ids."""
    gen = torch.Generator().manual_seed(seed)
    shape = torch.Size(batch_shape)
    T = shape[-1]
    done = torch.zeros(shape, dtype=torch.bool)
    terminated = torch.zeros(shape, dtype=torch.bool)
    done[..., T // 3] = True
    terminated[..., T // 3] = True  # a termination a third of the way
    done[..., (2 * T) // 3] = True  # a truncation two thirds of the way
    if len(shape) == 2:
        done[1, 1] = terminated[1, 1] = True  # rows differ
    row_offset = torch.arange(shape.numel() // T).reshape(shape[:-1] + (1,)) * 100
    traj_ids = row_offset + torch.cumsum(torch.cat([torch.zeros_like(done[..., :1]), done[..., :-1]], -1), -1)
    step_count = torch.zeros(shape, dtype=torch.long)
    for t in range(1, T):  # reference loop: steps since the last reset; row 0 starts mid-episode
        step_count[..., t] = torch.where(done[..., t - 1], 0, step_count[..., t - 1] + 1)
    step_count[..., 0] = 5
    if len(shape) == 2:
        step_count[1:, 0] = 0
    td = TensorDict(
        {
            "observation": torch.randn(shape + (obs_dim,), generator=gen),
            "step_count": step_count.unsqueeze(-1),
            ("collector", "traj_ids"): traj_ids,
            ("next", "done"): done.unsqueeze(-1),
            ("next", "terminated"): terminated.unsqueeze(-1),
            ("next", "truncated"): (done & ~terminated).unsqueeze(-1),
            ("next", "reward"): torch.randn(shape + (1,), generator=gen),
            "advantage": torch.randn(shape + (1,), generator=gen),
        },
        batch_size=shape,
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        actor(td)
    return td


def functional(module: nn.Module, fn):
    """``flat ↦ fn()`` with ``module``'s parameters replaced by the flat vector (for jacobians)."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]

    def call(flat: torch.Tensor):
        pieces = torch.split(flat, [s.numel() for s in shapes])
        tensors = {n: x.view(s) for n, x, s in zip(names, pieces, shapes, strict=True)}
        params = TensorDict(tensors, []).unflatten_keys(".")
        with params.to_module(module):
            return fn()

    return call


def flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def flat_grads(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in module.parameters()])


def reference_discount_matrix(td: TensorDict, gamma: float, initial_only: bool = False) -> torch.Tensor:
    """D[t, i] = γ^(t−i) when step i ≤ t starts no later than t's trajectory piece (explicit loops).

    With ``initial_only`` only columns i that are true episode starts (step_count == 0) are kept.
    """
    T = td.batch_size[-1]
    rows = td.batch_size.numel() // T
    done = td["next", "done"].reshape(rows, T)
    ids = td.get(("collector", "traj_ids"), torch.zeros(rows, T, dtype=torch.long)).reshape(rows, T)
    steps = td["step_count"].reshape(rows, T)
    n = rows * T
    D = torch.zeros(n, n, dtype=torch.get_default_dtype())
    for r in range(rows):
        for t in range(T):
            for i in range(t + 1):
                broken = any(bool(done[r, j - 1]) or ids[r, j] != ids[r, j - 1] for j in range(i + 1, t + 1))
                if broken or (initial_only and steps[r, i] != 0):
                    continue
                D[r * T + t, r * T + i] = gamma ** (t - i)
    return D
