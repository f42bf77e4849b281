"""CG, dense solve and Hessian-vector products against explicit matrices and torch.linalg.solve."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

from helpers import flat_params, functional, make_actor, make_batch, make_critic
from torchrl_stac import (
    CriticLoss,
    conjugate_gradient,
    dense_solve,
    exact_hvp,
    explicit_matrix,
    gauss_newton_hvp,
    jvp,
    solve_regularized,
    vjp,
)

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def critic_problem():
    """A tanh critic's loss on a small batch, and its explicit Hessian by autograd.functional."""
    torch.manual_seed(0)
    actor, critic = make_actor("tanh_normal"), make_critic("v")
    td = make_batch(actor, (32,))
    td["value_target"] = torch.randn(32, 1)
    loss_module = CriticLoss(critic)
    params = list(critic.parameters())
    prediction = loss_module.predict(td)
    loss = loss_module.squared_error(prediction, loss_module.target(td))
    predict = functional(critic, lambda: loss_module.predict(td))
    target = td["value_target"].reshape(-1)
    w = flat_params(critic)
    H = hessian(lambda v: (predict(v) - target).pow(2).mean(), w)
    J = jacobian(predict, w)
    return params, prediction, loss, H, J


def test_exact_hvp_matches_explicit_hessian(critic_problem):
    params, _, loss, H, _ = critic_problem
    hvp = exact_hvp(loss, params)
    v = torch.randn(H.shape[0])
    torch.testing.assert_close(hvp(v), H @ v)
    torch.testing.assert_close(explicit_matrix(hvp, H.shape[0], v), H)


def test_gauss_newton_hvp_matches_jtj(critic_problem):
    params, prediction, _, H, J = critic_problem
    n = prediction.numel()
    hvp = gauss_newton_hvp(prediction, params, 2.0 / n)
    G = explicit_matrix(hvp, H.shape[0], J)
    torch.testing.assert_close(G, 2.0 / n * J.T @ J)
    assert torch.linalg.eigvalsh(G).min() > -1e-12  # positive semi-definite
    assert not torch.allclose(G, H)  # the residual term is missing by design


def test_jvp_and_vjp_match_jacobian(critic_problem):
    params, prediction, _, _, J = critic_problem
    v, u = torch.randn(J.shape[1]), torch.randn(J.shape[0])
    torch.testing.assert_close(jvp(prediction, params)(v), J @ v)
    torch.testing.assert_close(vjp(prediction, params)(u), J.T @ u)


@pytest.mark.parametrize("lam", [1.0, 10.0, 500.0])
def test_cg_and_dense_match_linalg_solve(critic_problem, lam):
    params, _, loss, H, _ = critic_problem
    A = H + lam * torch.eye(H.shape[0])
    assert torch.linalg.eigvalsh(A).min() > 0, "precondition: H + λI positive definite"
    b = torch.randn(H.shape[0])
    reference = torch.linalg.solve(A, b)
    hvp = exact_hvp(loss, params)
    cg = conjugate_gradient(lambda v: hvp(v) + lam * v, b, max_iter=200, tol=1e-12)
    torch.testing.assert_close(cg.solution, reference, rtol=1e-8, atol=1e-10)
    assert cg.relative_residual <= 1e-12 and not cg.nonpositive_curvature
    dense = dense_solve(A, b)
    torch.testing.assert_close(dense.solution, reference)
    assert dense.relative_residual < 1e-10 and not dense.nonpositive_curvature
    for solver in ("cg", "dense"):  # the same system from H's products and λ
        regularized = solve_regularized(hvp, b, lam, solver=solver, max_iter=200, tol=1e-12)
        torch.testing.assert_close(regularized.solution, reference, rtol=1e-8, atol=1e-10)


def test_cg_reports_iterations_residual_and_warm_start():
    torch.manual_seed(1)
    Q = torch.linalg.qr(torch.randn(20, 20))[0]
    A = Q @ torch.diag(torch.linspace(1.0, 100.0, 20)) @ Q.T
    b = torch.randn(20)
    short = conjugate_gradient(lambda v: A @ v, b, max_iter=3)
    assert short.iterations == 3
    true_residual = torch.linalg.vector_norm(A @ short.solution - b) / torch.linalg.vector_norm(b)
    assert short.relative_residual == pytest.approx(float(true_residual), rel=1e-6)
    assert short.relative_residual > 1e-3
    resumed = conjugate_gradient(lambda v: A @ v, b, max_iter=3, x0=short.solution)
    exact = torch.linalg.solve(A, b)
    assert _energy_error(A, exact, resumed.solution) < _energy_error(A, exact, short.solution)
    bad_start = conjugate_gradient(lambda v: A @ v, b, max_iter=3, x0=1e6 * torch.randn(20))
    torch.testing.assert_close(bad_start.solution, short.solution)  # φ(x0) > φ(0): the start is dropped
    converged = conjugate_gradient(lambda v: A @ v, b, max_iter=100, tol=1e-8)
    assert converged.iterations <= 20 and converged.relative_residual <= 1e-8


def _energy_error(A: torch.Tensor, exact: torch.Tensor, x: torch.Tensor) -> float:
    """‖x − x*‖_A / ‖x*‖_A, which CG lowers at every step; the error at x = 0 is 1."""
    error = x - exact
    return float((error @ A @ error / (exact @ A @ exact)).sqrt())


def _textbook_cg(A: torch.Tensor, b: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Plain CG from x = 0 on an explicit matrix: the iterates x_1 … x_steps."""
    x, r = torch.zeros_like(b), b.clone()
    p, rr, iterates = r.clone(), r @ r, []
    for _ in range(steps):
        ap = A @ p
        alpha = rr / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        p, rr = r + (r @ r) / rr * p, r @ r
        iterates.append(x)
    return iterates


def test_cg_keeps_iterates_whose_residual_exceeds_b(float64):
    """The HalfCheetah failure: on this SPD system (cond 100) the first three iterates all have
    ‖Ax − b‖ > ‖b‖ while their A-norm error falls. A smallest-residual rule returned x = 0 there
    (no correction at all); CG must return its third iterate."""
    A = torch.diag(torch.tensor([2.0, 8.0, 30.0, 90.0, 200.0]))
    b = torch.tensor([3.0, 1.0, 1.0, 1.0, 1.0])
    exact = torch.linalg.solve(A, b)

    def relative_residual(x):
        return float(torch.linalg.vector_norm(A @ x - b) / torch.linalg.vector_norm(b))

    iterates = _textbook_cg(A, b, 3)
    assert all(relative_residual(x) > 1.3 for x in iterates)  # every iterate is "worse" than 0
    errors = [_energy_error(A, exact, x) for x in iterates]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.6
    result = conjugate_gradient(lambda v: A @ v, b, max_iter=3, tol=0.0)
    torch.testing.assert_close(result.solution, iterates[-1])
    assert result.relative_residual == pytest.approx(relative_residual(iterates[-1]), rel=1e-9)
    resumed = conjugate_gradient(lambda v: A @ v, b, max_iter=1, tol=0.0, x0=iterates[0])
    assert _energy_error(A, exact, resumed.solution) < errors[0]  # kept though ‖r0‖ > ‖b‖: φ(x0) < φ(0)


def test_cg_returns_its_last_iterate_when_the_residual_grows(float64):
    """CG's residual is not monotone: on this ill-conditioned SPD system it jumps up at iteration 3,
    yet the third iterate has the smaller A-norm error, and it is the one returned."""
    torch.manual_seed(27)
    Q = torch.linalg.qr(torch.randn(8, 8))[0]
    A = Q @ torch.diag(torch.logspace(-3, 3, 8)) @ Q.T
    b = torch.randn(8)
    exact = torch.linalg.solve(A, b)
    iterates = _textbook_cg(A, b, 3)
    residuals = [float(torch.linalg.vector_norm(A @ x - b)) for x in iterates]
    errors = [_energy_error(A, exact, x) for x in iterates]
    assert residuals[2] > residuals[1] and errors[2] < errors[1]
    result = conjugate_gradient(lambda v: A @ v, b, max_iter=3, tol=0.0)
    torch.testing.assert_close(result.solution, iterates[2])
    assert result.relative_residual == pytest.approx(residuals[2] / float(torch.linalg.vector_norm(b)), rel=1e-6)


def test_nonpositive_curvature_is_flagged():
    A = torch.diag(torch.tensor([2.0, 1.0, -3.0]))
    b = torch.tensor([1.0, 1.0, 1.0])
    cg = conjugate_gradient(lambda v: A @ v, b, max_iter=10)
    assert cg.nonpositive_curvature
    assert torch.isfinite(cg.solution).all()
    dense = dense_solve(A, b)
    assert dense.nonpositive_curvature
    torch.testing.assert_close(dense.solution, torch.linalg.solve(A, b))
    assert not dense_solve(torch.diag(torch.tensor([2.0, 1.0, 3.0])), b).nonpositive_curvature


def test_non_finite_operator_gives_a_non_finite_solution():
    result = conjugate_gradient(lambda v: v * float("nan"), torch.ones(3))
    assert torch.isnan(result.solution).all()


def test_solver_argument_checks():
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, torch.ones(2), max_iter=0)
    with pytest.raises(ValueError, match="unknown solver"):
        solve_regularized(lambda v: v, torch.ones(2), 1.0, solver="lu")
    with pytest.raises(ValueError, match="regularization"):
        solve_regularized(lambda v: v, torch.ones(2), -1.0)
    with pytest.raises(ValueError, match="square"):
        dense_solve(torch.ones(2, 3), torch.ones(2))
    zero = conjugate_gradient(lambda v: v, torch.zeros(3))
    assert zero.iterations == 0 and torch.equal(zero.solution, torch.zeros(3))
