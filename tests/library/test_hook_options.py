"""Hook options: curvature handling, λ schedules, warm starts, and collector batches end to end."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import Compose, DoubleToFloat, GymEnv, SerialEnv, StepCounter, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator

from helpers import flat_grads, make_actor, make_batch, make_critic
from torchrl_stac import CriticLoss, ExponentialDecay, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss


def setup(seed=0, shape=(32,)):
    torch.manual_seed(seed)
    actor, critic = make_actor("tanh_normal"), make_critic("v")
    td = make_batch(actor, shape, seed=seed)
    td["value_target"] = 5 * torch.randn(shape + (1,))  # far from the fit: H is indefinite
    actor_loss = StackelbergActorLoss(actor, critic)
    actor_loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    return actor, critic, actor_loss, CriticLoss(critic), td


def correction(actor, actor_loss, td, hook):
    actor.zero_grad()
    actor_loss(td)["loss_objective"].backward()
    partial = flat_grads(actor).clone()
    diag = hook(td)
    return flat_grads(actor) - partial, diag


def test_indefinite_hessian_flagged_and_gauss_newton_fallback():
    actor, critic, actor_loss, critic_loss, td = setup()
    flagged = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(0.0, cg_iterations=50))
    _, diag = correction(actor, actor_loss, td, flagged)
    assert diag["nonpositive_curvature"] == 1 and diag["gauss_newton_fallback"] == 0
    fallback = ImplicitGradientHook(
        actor_loss, critic_loss, solver=FollowerSolver(1e-3, cg_iterations=50, curvature_fallback="gauss_newton")
    )
    got, diag = correction(actor, actor_loss, td, fallback)
    assert diag["gauss_newton_fallback"] == 1
    gauss_newton = ImplicitGradientHook(
        actor_loss, critic_loss, solver=FollowerSolver(1e-3, cg_iterations=50), hessian="gauss_newton"
    )
    expected, diag_gn = correction(actor, actor_loss, td, gauss_newton)
    assert diag_gn["nonpositive_curvature"] == 0
    torch.testing.assert_close(got, expected)


def test_regularization_schedule_and_state_dict():
    actor, critic, actor_loss, critic_loss, td = setup()
    schedule = ExponentialDecay(start=100.0, floor=1.0, half_life=1.0)
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(schedule))
    seen = [float(correction(actor, actor_loss, td, hook)[1]["regularization"]) for _ in range(3)]
    assert seen == pytest.approx([100.0, 50.5, 25.75])
    restored = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(schedule))
    restored.load_state_dict(hook.state_dict())
    assert restored.solver.num_updates == 3
    a, _ = correction(actor, actor_loss, td, hook)
    b, diag = correction(actor, actor_loss, td, restored)
    assert float(diag["regularization"]) == pytest.approx(schedule(3))
    torch.testing.assert_close(a, b)


def test_warm_start_reaches_a_smaller_residual():
    actor, critic, actor_loss, critic_loss, td = setup()
    td["value_target"] = critic_loss.predict(td).detach().unsqueeze(-1) + 0.1 * torch.randn(32, 1)
    cold = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(0.1, cg_iterations=3, warm_start=False))
    warm = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(0.1, cg_iterations=3, warm_start=True))
    residuals = {"cold": [], "warm": []}
    for _ in range(4):
        residuals["cold"].append(float(correction(actor, actor_loss, td, cold)[1]["relative_residual"]))
        residuals["warm"].append(float(correction(actor, actor_loss, td, warm)[1]["relative_residual"]))
    assert residuals["cold"][0] == pytest.approx(residuals["warm"][0])
    assert residuals["warm"][-1] < 0.5 * residuals["cold"][-1]


@pytest.mark.parametrize("num_envs", [1, 2])
def test_hook_on_collector_batches(num_envs):
    """[N] and [B, T] batches straight from a Collector on a MuJoCo task, with GAE and MC targets."""
    torch.manual_seed(0)

    def make_env():
        return TransformedEnv(GymEnv("Hopper-v4"), Compose(DoubleToFloat(), StepCounter(max_steps=20)))

    env = make_env() if num_envs == 1 else SerialEnv(num_envs, make_env)
    obs, act = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    policy = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(MLP(in_features=obs, out_features=2 * act, num_cells=[16]), NormalParamExtractor()),
            ["observation"],
            ["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        spec=env.action_spec,
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    critic = ValueOperator(MLP(in_features=obs, out_features=1, num_cells=[16]), in_keys=["observation"])
    collector = Collector(env, policy, frames_per_batch=60, total_frames=60)
    td = next(iter(collector))
    collector.shutdown()
    assert td.batch_dims == (1 if num_envs == 1 else 2) and td["next", "done"].any()
    critic_loss, actor_loss = (
        CriticLoss(critic),
        StackelbergActorLoss(actor_network=policy, critic_network=critic, normalize_advantage=True),
    )
    critic_loss.make_value_estimator(gamma=0.99)
    actor_loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    actor_loss.set_keys(value_target="gae_target")
    with torch.no_grad():
        critic_loss.value_estimator(td)  # Monte-Carlo returns → value_target
        actor_loss.value_estimator(td)  # GAE → advantage, gae_target
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(500.0), start_states="initial")
    got, diag = correction(policy, actor_loss, td, hook)
    assert torch.isfinite(got).all() and got.norm() > 0
    assert diag["skipped"] == 0 and 0 < diag["cosine_partial_total"] <= 1 + 1e-6
