"""Bad input gets a clear error; non-finite values are never stepped on."""

from __future__ import annotations

import pytest
import torch

from helpers import flat_grads, make_actor, make_batch, make_critic
from torchrl_stac import CriticLoss, ExponentialDecay, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss


@pytest.fixture
def players():
    torch.manual_seed(0)
    actor, critic = make_actor("tanh_normal"), make_critic("v")
    td = make_batch(actor, (16,))
    td["value_target"] = torch.randn(16, 1)
    actor_loss = StackelbergActorLoss(actor, critic)
    actor_loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    return actor, critic, actor_loss, CriticLoss(critic), td


def backward(actor, actor_loss, td):
    actor.zero_grad()
    actor_loss(td)["loss_objective"].backward()


def test_missing_keys_name_the_key(players):
    actor, critic, actor_loss, critic_loss, td = players
    with pytest.raises(KeyError, match="value_target"):
        critic_loss(td.exclude("value_target"))
    with pytest.raises(KeyError, match="observation"):
        critic_loss(td.exclude("observation"))
    with pytest.raises(KeyError, match="action"):
        actor_loss.log_prob(td.exclude("action"))
    backward(actor, actor_loss, td)
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0))
    with pytest.raises(KeyError, match="done"):
        hook(td.exclude(("next", "done")))
    with pytest.raises(KeyError, match="StepCounter"):
        ImplicitGradientHook(actor_loss, critic_loss, start_states="initial")(td.exclude("step_count"))


def test_custom_keys_via_set_keys(players):
    actor, critic, actor_loss, critic_loss, td = players
    td["mc_return"] = td["value_target"]
    critic_loss.set_keys(value_target="mc_return")
    expected = critic_loss(td)["loss_critic"]
    assert torch.equal(expected, critic_loss(td.exclude("value_target"))["loss_critic"])
    td["my_adv"] = td["advantage"]
    actor_loss.set_keys(advantage="my_adv")
    assert "my_adv" in actor_loss.in_keys
    actor_loss(td.exclude("advantage"))
    with pytest.raises(ValueError, match="not an accepted"):
        critic_loss.set_keys(no_such_key="x")


def test_shape_mismatch(players):
    _, _, _, critic_loss, td = players
    bad = td.exclude("value_target")
    bad["value_target"] = torch.randn(16)  # [N] is accepted as well as [N, 1]
    critic_loss(bad)
    bad = td.exclude("value_target")
    bad.set_non_tensor("unused", 0)
    bad = bad.exclude("unused")
    bad["value_target"] = torch.randn(16, 3)
    with pytest.raises(ValueError, match="one scalar per step"):
        critic_loss(bad)


def test_actor_critic_parameter_mismatch(players):
    actor, critic, actor_loss, critic_loss, td = players
    other = CriticLoss(make_critic("v"))
    with pytest.raises(ValueError, match="mismatch"):
        ImplicitGradientHook(actor_loss, other)


def test_shared_parameters_rejected():
    actor = make_actor("tanh_normal")
    critic = make_critic("v")
    critic.module[0] = actor.module[0].module[0][0]  # a shared first layer
    with pytest.raises(ValueError, match="share parameters"):
        ImplicitGradientHook(StackelbergActorLoss(actor, critic), CriticLoss(critic), gamma=0.9)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(hessian="fisher"), "unknown hessian"),
        (dict(start_states="some"), "unknown start_states"),
        (dict(psi="q"), "unknown psi"),
        (dict(gamma=1.5), "gamma"),
    ],
)
def test_invalid_hook_options(players, options, match):
    _, _, actor_loss, critic_loss, _ = players
    with pytest.raises(ValueError, match=match):
        ImplicitGradientHook(actor_loss, critic_loss, **options)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(regularization=-1.0), "regularization"),
        (dict(regularization=lambda step: -1.0), "regularization"),
        (dict(method="lu"), "unknown method"),
        (dict(on_nonfinite="ignore"), "unknown on_nonfinite"),
        (dict(curvature_fallback="fisher"), "unknown curvature_fallback"),
        (dict(cg_iterations=0), "cg_iterations"),
        (dict(tol=-1.0), "tol"),
        (dict(eigenvalue_steps=-1), "eigenvalue_steps"),
    ],
)
def test_invalid_solver_options(options, match):
    with pytest.raises(ValueError, match=match):
        FollowerSolver(**options)
    with pytest.raises(ValueError):
        ExponentialDecay(start=-1.0)


def test_schedule_going_negative_raises_at_that_update(players):
    actor, _, actor_loss, critic_loss, td = players
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(lambda step: 1.0 - step))
    backward(actor, actor_loss, td)
    hook(td)
    hook(td)  # λ = 0 is allowed
    with pytest.raises(ValueError, match="at step 2"):
        hook(td)


def test_hook_before_backward(players):
    actor, _, actor_loss, critic_loss, td = players
    actor.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="backward"):
        ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0))(td)


def test_non_finite_losses_raise(players):
    actor, _, actor_loss, critic_loss, td = players
    bad = td.clone()
    bad["value_target"][3] = float("nan")
    with pytest.raises(FloatingPointError, match="loss_critic"):
        critic_loss(bad)
    bad = td.clone()
    bad["advantage"][0] = float("inf")
    with pytest.raises(FloatingPointError, match="advantage"):
        actor_loss(bad)


def test_non_finite_critic_raises_or_skips_without_touching_grad(players):
    actor, _, actor_loss, critic_loss, td = players
    bad = td.clone()
    bad["value_target"][3] = float("nan")
    backward(actor, actor_loss, td)
    partial = flat_grads(actor).clone()
    with pytest.raises(FloatingPointError, match="non-finite"):
        ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0))(bad)
    assert torch.equal(flat_grads(actor), partial)
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0, on_nonfinite="skip"))
    with pytest.warns(UserWarning, match="skipped"):
        diag = hook(bad)
    assert diag["skipped"] == 1 and diag["implicit_norm"] == 0
    assert torch.equal(flat_grads(actor), partial)
    assert torch.isfinite(flat_grads(actor)).all()


def test_non_finite_solution_is_caught(players, monkeypatch):
    actor, _, actor_loss, critic_loss, td = players
    backward(actor, actor_loss, td)
    partial = flat_grads(actor).clone()
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0, on_nonfinite="skip"))
    import torchrl_stac.implicit_hook as implicit

    def broken_hvp(loss, params):
        return lambda v: v * float("nan")

    monkeypatch.setattr(implicit, "exact_hvp", broken_hvp)
    with pytest.warns(UserWarning, match="Hessian solve"):
        diag = hook(td)
    assert diag["skipped"] == 1
    assert torch.equal(flat_grads(actor), partial)


def test_non_finite_partial_gradient_always_raises(players):
    actor, _, actor_loss, critic_loss, td = players
    backward(actor, actor_loss, td)
    next(actor.parameters()).grad[0] = float("nan")
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0, on_nonfinite="skip"))
    with pytest.raises(FloatingPointError, match="refusing to step"):
        hook(td)
