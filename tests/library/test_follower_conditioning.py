"""λ from the follower's conditioning, the Fisher follower curvature and the bound on the correction
(docs/math.md §4), each against an explicit matrix on a small problem."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import ProbabilisticActor, TanhNormal

from torchrl_stac import FollowerSolver, StackelbergSACLoss, StackelbergUpdate, explicit_matrix, fisher_hvp
from torchrl_stac.curvature import flatten, hvp_from_grad

pytestmark = pytest.mark.usefixtures("float64")


def symmetric_with_spectrum(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen))
    return q @ torch.diag(torch.tensor(eigenvalues)) @ q.T


SPECTRUM = [-3.0, -1.0, 0.5, 1.0, 2.0, 4.0, 6.0, 10.0]  # indefinite


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_condition_number_lambda_is_the_closed_form_and_bounds_the_condition(kappa):
    H = symmetric_with_spectrum(SPECTRUM)
    solver = FollowerSolver(0.0, condition_number=kappa, eigenvalue_steps=len(SPECTRUM))
    lam = solver.regularize(0.0, lambda v: H @ v, torch.ones(len(SPECTRUM)))
    assert lam == pytest.approx((10.0 - kappa * -3.0) / (kappa - 1), rel=1e-9)
    shifted = torch.linalg.eigvalsh(H + lam * torch.eye(len(SPECTRUM)))
    assert shifted[0] > 0 and shifted[-1] / shifted[0] <= kappa * (1 + 1e-9)
    floor = solver.regularize(50.0, lambda v: H @ v, torch.ones(len(SPECTRUM)))  # the floor wins when larger
    assert floor == 50.0


def test_a_flat_spectrum_still_gets_a_positive_definite_shift():
    H = -2.0 * torch.eye(4)
    lam = FollowerSolver(0.0, condition_number=10.0, eigenvalue_steps=4).regularize(0.0, lambda v: H @ v, torch.ones(4))
    assert torch.linalg.eigvalsh(H + lam * torch.eye(4))[0] > 0


def test_lanczos_extremes_match_eigvalsh_and_bound_them_with_fewer_steps():
    eigenvalues = torch.linspace(-5.0, 20.0, 30).tolist()
    H = symmetric_with_spectrum(eigenvalues, seed=3)
    start = torch.randn(30, generator=torch.Generator().manual_seed(1))
    full = FollowerSolver(eigenvalue_steps=30).extreme_eigenvalues(lambda v: H @ v, start)
    assert full == pytest.approx((-5.0, 20.0), rel=1e-8, abs=1e-8)
    few = FollowerSolver(eigenvalue_steps=8).extreme_eigenvalues(lambda v: H @ v, start)
    assert -5.0 <= few[0] and few[1] <= 20.0 + 1e-9  # Ritz values lie inside the spectrum


def test_warm_started_lanczos_sharpens_and_eigenvalue_every_spaces_the_estimates():
    eigenvalues = torch.linspace(-5.0, 20.0, 40).tolist()
    H = symmetric_with_spectrum(eigenvalues, seed=4)
    products = []

    def hvp(v):
        products.append(1)
        return H @ v

    solver = FollowerSolver(condition_number=10.0, eigenvalue_steps=4, eigenvalue_every=3)
    start = torch.randn(40, generator=torch.Generator().manual_seed(2))
    errors = []
    for call in range(7):
        before = len(products)
        solver.regularize(0.0, hvp, start)
        assert (len(products) > before) == (call % 3 == 0)  # estimated at calls 0, 3, 6 only
        errors.append(20.0 - solver.eigenvalues[1])
    assert errors[-1] < errors[0]  # each estimate starts from the last one's Ritz vectors


def test_the_condition_state_resumes_exactly():
    H = symmetric_with_spectrum(torch.linspace(-2.0, 9.0, 12).tolist(), seed=5)
    start = torch.ones(12)
    first = FollowerSolver(condition_number=20.0, eigenvalue_steps=3, eigenvalue_every=2)
    for _ in range(3):
        first.regularize(first.next_regularization(), lambda v: H @ v, start)
    resumed = FollowerSolver(condition_number=20.0, eigenvalue_steps=3, eigenvalue_every=2)
    resumed.load_state_dict(first.state_dict())
    for _ in range(4):
        expected = first.regularize(first.next_regularization(), lambda v: H @ v, start)
        assert resumed.regularize(resumed.next_regularization(), lambda v: H @ v, start) == expected


def test_the_bound_scales_the_correction_exactly_and_says_so():
    solver = FollowerSolver(correction_max_ratio=0.5)
    partial = torch.tensor([2.0, 0.0])
    long = torch.tensor([0.0, 4.0])
    bounded, applied = solver.bound(partial, long)
    assert applied and torch.allclose(bounded, torch.tensor([0.0, 1.0]))
    short = torch.tensor([0.5, 0.5])
    assert solver.bound(partial, short) == (short, False)
    assert FollowerSolver().bound(partial, long) == (long, False)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="correction_max_ratio"):
            FollowerSolver(correction_max_ratio=bad)
    with pytest.raises(ValueError, match="condition_number"):
        FollowerSolver(condition_number=1.0)


OBS, ACT = 4, 2


def tiny_sac(seed: int = 0) -> StackelbergSACLoss:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(OBS, 5), nn.Tanh(), nn.Linear(5, 2 * ACT), NormalParamExtractor())
    actor = ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    critics = [TensorDictModule(Critic(), ["observation", "action"], ["state_action_value"]) for _ in range(2)]
    return StackelbergSACLoss(actor, critics, gamma=0.9, alpha_init=0.2, fixed_alpha=True)


class Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS + ACT, 6), nn.Tanh(), nn.Linear(6, 1))

    def forward(self, observation, action):
        return self.net(torch.cat([observation, action], -1))


def batch(size: int = 16, seed: int = 0) -> TensorDict:
    gen = torch.Generator().manual_seed(seed)
    terminated = torch.rand(size, 1, generator=gen) < 0.1
    return TensorDict(
        {
            "observation": torch.randn(size, OBS, generator=gen),
            "action": torch.rand(size, ACT, generator=gen) * 2 - 1,
            ("next", "observation"): torch.randn(size, OBS, generator=gen),
            ("next", "reward"): torch.randn(size, 1, generator=gen),
            ("next", "terminated"): terminated,
            ("next", "done"): terminated.clone(),
        },
        batch_size=[size],
    )


def test_fisher_hvp_equals_the_explicit_fisher_of_the_policy():
    loss, td = tiny_sac(), batch()
    params = loss.actor_params
    normal = loss.policy_normal(td)
    F = explicit_matrix(fisher_hvp(normal, params), sum(p.numel() for p in params), params[0])
    explicit = torch.zeros_like(F)
    for b in range(td.shape[0]):
        for a in range(ACT):
            g_loc = flatten(torch.autograd.grad(normal.loc[b, a], params, retain_graph=True))
            g_scale = flatten(torch.autograd.grad(normal.scale[b, a], params, retain_graph=True))
            variance = normal.scale[b, a].detach() ** 2
            explicit += (torch.outer(g_loc, g_loc) + 2 * torch.outer(g_scale, g_scale)) / variance
    torch.testing.assert_close(F, explicit / td.shape[0], rtol=1e-8, atol=1e-10)
    assert torch.linalg.eigvalsh(F)[0] > -1e-10  # positive semi-definite


def test_fisher_makes_the_critic_leader_correction_act_where_the_exact_hessian_is_indefinite():
    """With the critic leading, ∇²_θ f_A is indefinite here (CG stops at once); the Fisher matrix with
    a condition-number λ gives a correction of the order of the partial gradient."""
    corrections = {}
    for hessian in ("exact", "fisher"):
        loss, td = tiny_sac(seed=3), batch(64, seed=3)
        fisher = hessian == "fisher"  # the exact Hessian with a bare λ = 0 solve
        solver = FollowerSolver(condition_number=100.0, eigenvalue_steps=20) if fisher else FollowerSolver()
        update = StackelbergUpdate(loss, leader="critic", hessian=hessian, solver=solver)
        corrections[hessian] = update(td)
    actor_hessian = explicit_matrix_of_actor_loss()
    assert torch.linalg.eigvalsh(actor_hessian)[0] < 0  # indefinite
    assert corrections["exact"]["nonpositive_curvature"] == 1
    assert corrections["fisher"]["nonpositive_curvature"] == 0
    assert corrections["fisher"]["correction_ratio"] > 0.05
    assert corrections["fisher"]["regularization"] > 0 and "hessian_eigenvalue_max" in corrections["fisher"].keys()
    with pytest.raises(ValueError, match="fisher"):
        StackelbergUpdate(tiny_sac(), leader="actor", hessian="fisher")


def test_sacs_critic_leader_inverts_the_fisher_information_unless_told_otherwise():
    """``StackelbergUpdate(loss, leader="critic")`` on SAC solves with the policy's Fisher information,
    the recipe's default (benchmarks/RESULTS.md); the actor leader with the critics' exact Hessian."""
    for leader, own, other in (("critic", "fisher", "exact"), ("actor", "exact", "gauss_newton")):
        grads = {}
        for hessian in (None, own, other):
            loss, td = tiny_sac(seed=3), batch(64, seed=3)
            solver = FollowerSolver(1.0, curvature_fallback=None)
            StackelbergUpdate(loss, leader=leader, hessian=hessian, solver=solver)(td)
            grads[hessian] = torch.cat([p.grad.reshape(-1) for p in loss.critic_params + loss.actor_params])
        torch.testing.assert_close(grads[None], grads[own], rtol=0, atol=0)
        assert not torch.allclose(grads[None], grads[other])


def explicit_matrix_of_actor_loss() -> torch.Tensor:
    loss, td = tiny_sac(seed=3), batch(64, seed=3)
    loss.draw_noise(td)
    params = loss.actor_params
    f_actor, _, _ = loss.player_losses(td)
    grads = torch.autograd.grad(f_actor, params, create_graph=True)
    return explicit_matrix(hvp_from_grad(grads, params), sum(p.numel() for p in params), params[0])


def test_the_bound_acts_on_a_real_update_and_is_logged():
    loss, td = tiny_sac(), batch(32)
    update = StackelbergUpdate(loss, leader="actor", solver=FollowerSolver(0.1, correction_max_ratio=1e-3))
    out = update(td)
    assert out["correction_bounded"] == 1
    assert float(out["correction_ratio"]) == pytest.approx(1e-3, rel=1e-6)


def test_an_update_given_no_solver_conditions_lambda_and_bounds_the_correction():
    """``StackelbergUpdate(loss)`` uses ``FollowerSolver.safe()``: on a real batch λ lifts the
    critic's Hessian to cond(H + λI) <= κ (so λ > −μ_min), and the correction is at most ρ = 1 times
    the actor's partial gradient."""
    loss, td = tiny_sac(), batch(32)
    out = StackelbergUpdate(loss, leader="actor")(td)
    mu_min, mu_max = float(out["hessian_eigenvalue_min"]), float(out["hessian_eigenvalue_max"])
    lam = float(out["regularization"])
    assert lam + mu_min > 0 and (mu_max + lam) / (mu_min + lam) == pytest.approx(100.0, rel=1e-4)
    assert 0 < float(out["correction_ratio"]) <= 1.0 + 1e-6
