"""The hook's correction against g − M(H+λI)⁻¹b assembled from explicit matrices (docs/math.md §2–3).

M is built from jacobians of log π and of the critic and from a discount matrix written with
explicit loops over the batch, H by ``torch.autograd.functional.hessian``, x by
``torch.linalg.solve``: nothing here reuses the library's HVPs, solvers or cumulative sums.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

from helpers import (
    flat_grads,
    flat_params,
    functional,
    make_actor,
    make_batch,
    make_critic,
    reference_discount_matrix,
)
from torchrl_stac import CriticLoss, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss

GAMMA = 0.9


pytestmark = pytest.mark.usefixtures("float64")


def build(actor_kind, critic_kind, batch_shape, *, near_fit=False, normalize=False, seed=0):
    torch.manual_seed(seed)
    actor, critic = make_actor(actor_kind), make_critic(critic_kind)
    td = make_batch(actor, batch_shape, seed=seed)
    critic_loss = CriticLoss(critic)
    actor_loss = StackelbergActorLoss(actor, critic, normalize_advantage=normalize)
    actor_loss.make_value_estimator(gamma=GAMMA, lmbda=0.95)
    with torch.no_grad():
        prediction = critic_loss.predict(td)
    noise = torch.randn(td.batch_size, generator=torch.Generator().manual_seed(seed + 1))
    # at the critic's exact fit H is the Gauss-Newton matrix, positive definite here (for λ = 0)
    target = prediction + (0.0 if near_fit else 1.0) * noise
    td["value_target"] = target.unsqueeze(-1)
    return actor, critic, actor_loss, critic_loss, td


def reference_gradient(
    actor, critic, actor_loss, critic_loss, td, lam, *, hessian_kind="exact", start_states="all", psi="advantage"
):
    """partial + M (H + λI)⁻¹ b / σ from explicit matrices; also returns H for preconditions."""
    n = td.batch_size.numel()
    w, theta = flat_params(critic), flat_params(actor)
    predict = functional(critic, lambda: critic_loss.predict(td).reshape(-1))
    log_prob = functional(actor, lambda: actor_loss.log_prob(td).reshape(-1))
    target = td["value_target"].reshape(-1)
    jac_w = jacobian(predict, w)  # [N, Pw]
    jac_theta = jacobian(log_prob, theta)  # [N, Pθ]
    if hessian_kind == "exact":
        H = hessian(lambda v: (predict(v) - target).pow(2).mean(), w)
    else:
        H = 2.0 / n * jac_w.T @ jac_w
    b = jac_w.mean(0)
    x = torch.linalg.solve(H + lam * torch.eye(w.numel()), b)
    D = reference_discount_matrix(td, GAMMA, initial_only=start_states == "initial")
    advantage = td["advantage"].reshape(-1)
    psi_t = advantage if psi == "advantage" else target
    if critic_kind(critic_loss) == "v":
        M = -2.0 / n * jac_theta.T @ torch.diag(psi_t) @ D @ jac_w
    else:
        own = torch.diag(torch.diag(D))  # pairs each step with its own c_t (only starts if initial)
        residual = predict(w) - target
        M = 1.0 / n * jac_theta.T @ (2 * torch.diag(residual) @ own - 2 * torch.diag(psi_t) @ (D - own)) @ jac_w
    sigma = advantage.std() if actor_loss.normalize_advantage else 1.0
    return M @ x / sigma, H


def critic_kind(critic_loss):
    return critic_loss.critic_type


def run_hook(actor, actor_loss, critic_loss, td, lam, *, method="cg", cg_iterations=10, tol=1e-6, **options):
    actor.zero_grad()
    actor_loss(td)["loss_objective"].backward()
    partial = flat_grads(actor).clone()
    solver = FollowerSolver(lam, method=method, cg_iterations=cg_iterations, tol=tol)
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=solver, gamma=GAMMA, **options)
    diagnostics = hook(td)
    return partial, flat_grads(actor), diagnostics


CASES = [
    ("tanh_normal", "v"),
    ("normal", "v"),
    ("categorical", "v"),
    ("one_hot", "v"),
    ("tanh_normal", "q"),
    ("one_hot", "q"),
]


@pytest.mark.parametrize("actor_kind,critic_kind_", CASES)
@pytest.mark.parametrize("lam", [0.0, 1.0, 500.0])
@pytest.mark.parametrize("batch_shape", [(24,), (3, 8)])
def test_correction_matches_explicit_matrices(actor_kind, critic_kind_, lam, batch_shape):
    if lam == 0.0 and (actor_kind, critic_kind_) == ("one_hot", "q"):
        pytest.skip("one-hot action inputs are collinear with the critic's bias: H is singular")
    actor, critic, actor_loss, critic_loss, td = build(
        actor_kind, critic_kind_, batch_shape, near_fit=lam == 0.0, normalize=lam == 1.0
    )
    expected, H = reference_gradient(actor, critic, actor_loss, critic_loss, td, lam)
    if lam == 0.0:
        assert torch.linalg.eigvalsh(H).min() > 0, "precondition: H positive definite at λ = 0"
    partial, total, diag = run_hook(actor, actor_loss, critic_loss, td, lam, method="dense")
    assert expected.norm() > 1e-6 * partial.norm(), "the correction under test must not vanish"
    torch.testing.assert_close(total - partial, expected, rtol=1e-7, atol=1e-10)
    assert diag["nonpositive_curvature"] == 0
    torch.testing.assert_close(diag["implicit_norm"].double(), expected.norm(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("batch_shape", [(24,), (3, 8)])
@pytest.mark.parametrize("critic_kind_", ["v", "q"])
@pytest.mark.parametrize(
    "options",
    [
        dict(start_states="initial"),
        dict(psi="return"),
        dict(hessian="gauss_newton"),
        dict(start_states="initial", psi="return", hessian="gauss_newton"),
    ],
)
def test_estimator_options_match_explicit_matrices(batch_shape, critic_kind_, options):
    actor_kind = "tanh_normal" if critic_kind_ == "v" else "one_hot"
    actor, critic, actor_loss, critic_loss, td = build(actor_kind, critic_kind_, batch_shape)
    lam = 1.0
    expected, _ = reference_gradient(
        actor,
        critic,
        actor_loss,
        critic_loss,
        td,
        lam,
        hessian_kind=options.get("hessian", "exact"),
        start_states=options.get("start_states", "all"),
        psi=options.get("psi", "advantage"),
    )
    partial, total, _ = run_hook(actor, actor_loss, critic_loss, td, lam, method="dense", **options)
    assert expected.norm() > 0
    torch.testing.assert_close(total - partial, expected, rtol=1e-7, atol=1e-10)


def test_cg_matches_dense_and_reports_convergence():
    actor, critic, actor_loss, critic_loss, td = build("tanh_normal", "v", (3, 8))
    expected, _ = reference_gradient(actor, critic, actor_loss, critic_loss, td, 1.0)
    n_params = flat_params(critic).numel()
    partial, total, diag = run_hook(actor, actor_loss, critic_loss, td, 1.0, cg_iterations=4 * n_params, tol=1e-13)
    torch.testing.assert_close(total - partial, expected, rtol=1e-6, atol=1e-10)
    assert diag["relative_residual"] < 1e-10
    assert 0 < diag["solver_iterations"] <= 4 * n_params


def test_large_regularization_recovers_plain_actor_critic():
    """λ → ∞: the correction vanishes like 1/λ and the update is the plain actor-critic gradient."""
    actor, critic, actor_loss, critic_loss, td = build("tanh_normal", "v", (24,))
    norms = []
    for lam in (1e2, 1e4, 1e6):
        partial, total, diag = run_hook(actor, actor_loss, critic_loss, td, lam)
        norms.append((total - partial).norm())
        if lam >= 1e4:
            assert diag["cosine_partial_total"] > 0.99
    assert norms[0] > 0
    torch.testing.assert_close(norms[1] / norms[0], torch.tensor(1e-2), rtol=0.05, atol=0)
    torch.testing.assert_close(norms[2] / norms[0], torch.tensor(1e-4), rtol=0.05, atol=0)
    assert norms[2] < 1e-4 * partial.norm()


@pytest.mark.parametrize("source", ["done_only", "traj_ids_only"])
def test_trajectory_boundaries_from_each_source(source):
    """Boundaries come from ('next', 'done') alone, or from trajectory ids alone."""
    actor, critic, actor_loss, critic_loss, td = build("tanh_normal", "v", (3, 8))
    if source == "done_only":
        td = td.exclude(("collector", "traj_ids"))
    else:  # e.g. rows stitched from different collectors: the id changes, no done flag
        td["next", "done"] = torch.zeros_like(td["next", "done"])
        td["collector", "traj_ids"][:, 5:] += 1000
    expected, _ = reference_gradient(actor, critic, actor_loss, critic_loss, td, 1.0)
    partial, total, _ = run_hook(actor, actor_loss, critic_loss, td, 1.0, method="dense")
    torch.testing.assert_close(total - partial, expected, rtol=1e-7, atol=1e-10)
