"""TorchRL's own A2C and PPO losses as the leader: the same correction as StackelbergActorLoss's.

Advantage-scale convention: the correction is divided by the σ that the leader's loss divides Â
by: std(Â) with ``normalize_advantage=True`` (PPO losses and StackelbergActorLoss alike), else 1
(A2CLoss never normalises, so it is compared with ``normalize_advantage=False``).
"""

from __future__ import annotations

import pytest
import torch
from torchrl.objectives import A2CLoss, ClipPPOLoss, KLPENPPOLoss, PPOLoss

from helpers import flat_grads, make_actor, make_batch, make_critic
from torchrl_stac import CriticLoss, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss

GAMMA = 0.9


@pytest.fixture
def players():
    torch.manual_seed(0)
    actor, critic = make_actor("tanh_normal"), make_critic("v")
    td = make_batch(actor, (3, 12))
    td["value_target"] = torch.randn(3, 12, 1)
    with torch.no_grad():  # the behaviour policy is the current one: ρ = 1 (θ = θ_old)
        td["action_log_prob"] = actor.get_dist(td.select("observation").copy()).log_prob(td["action"])
    return actor, critic, td


def corrected_gradient(actor, leader_loss, critic_loss, td, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial gradient, gradient after the hook) for ``leader_loss`` on ``td``."""
    actor.zero_grad()
    leader_loss(td.clone())["loss_objective"].backward()
    partial = flat_grads(actor).clone()
    ImplicitGradientHook(leader_loss, critic_loss, solver=FollowerSolver(0.5, tol=1e-10), gamma=GAMMA, **options)(
        td.clone()
    )
    return partial, flat_grads(actor).clone()


def test_a2c_loss_gives_the_stackelberg_actor_loss_correction(players):
    actor, critic, td = players
    ours = corrected_gradient(actor, StackelbergActorLoss(actor, critic), CriticLoss(critic), td)
    a2c = corrected_gradient(actor, A2CLoss(actor, critic), None, td)  # follower: A2C's own critic and target
    torch.testing.assert_close(a2c[0], ours[0])
    torch.testing.assert_close(a2c[1] - a2c[0], ours[1] - ours[0], rtol=1e-5, atol=1e-7)
    assert (ours[1] - ours[0]).norm() > 1e-3 * ours[0].norm()  # a correction that matters


@pytest.mark.parametrize("loss_class", [PPOLoss, ClipPPOLoss, KLPENPPOLoss])
@pytest.mark.parametrize("normalize", [False, True])
def test_ppo_losses_at_theta_old_give_the_same_correction(players, loss_class, normalize):
    actor, critic, td = players
    ours = corrected_gradient(actor, StackelbergActorLoss(actor, critic, normalize_advantage=normalize), None, td)
    ppo = loss_class(actor, critic, normalize_advantage=normalize, entropy_bonus=False)
    theirs = corrected_gradient(actor, ppo, None, td)
    torch.testing.assert_close(theirs[0], ours[0], rtol=1e-5, atol=1e-7)  # PPO's gradient at θ_old
    torch.testing.assert_close(theirs[1] - theirs[0], ours[1] - ours[0], rtol=1e-5, atol=1e-7)


def test_minibatch_corrections_average_to_the_batch_correction(players):
    actor, critic, td = players
    ppo = ClipPPOLoss(actor, critic, entropy_bonus=False)
    hook = ImplicitGradientHook(ppo, solver=FollowerSolver(0.5, tol=1e-10), gamma=GAMMA)
    actor.zero_grad()
    ppo(td)["loss_objective"].backward()
    partial = flat_grads(actor).clone()
    hook.prepare(td)
    assert td["stackelberg_weight"].shape == td.batch_size
    hook.correct(td)
    whole = flat_grads(actor) - partial
    pieces = []
    for rows in td.reshape(-1).split(12):  # three minibatches of 12 steps, as PPO's epochs see them
        actor.zero_grad()
        ppo(rows)["loss_objective"].backward()
        before = flat_grads(actor).clone()
        hook.correct(rows)
        pieces.append(flat_grads(actor) - before)
    torch.testing.assert_close(torch.stack(pieces).mean(0), whole, rtol=1e-5, atol=1e-7)


def test_correct_needs_prepare_and_keys_name_themselves(players):
    actor, critic, td = players
    ppo = ClipPPOLoss(actor, critic)
    hook = ImplicitGradientHook(ppo, solver=FollowerSolver(0.5), gamma=GAMMA)
    actor.zero_grad()
    ppo(td)["loss_objective"].backward()
    with pytest.raises(KeyError, match="hook.prepare"):
        hook.correct(td)
    hook.prepare(td)
    with pytest.raises(KeyError, match="action_log_prob"):
        hook.correct(td.exclude("action_log_prob"))
    with pytest.raises(TypeError, match="A2CLoss, PPOLoss"):
        ImplicitGradientHook(CriticLoss(critic))


class Times(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


@pytest.mark.parametrize("scale", ["absolute", "trace"])
def test_trace_regularization_makes_the_correction_invariant_to_the_critics_scale(players, scale):
    """The same critic with its outputs (and targets) ×10: J, b and H scale by 10, 10 and 100. With
    λ relative to tr(H)/n the correction is unchanged; with an absolute λ it is not."""
    from torchrl.modules import ValueOperator

    actor, critic, td = players

    def correction(critic_net, targets):
        batch = td.clone()
        batch["value_target"] = targets
        loss = StackelbergActorLoss(actor, critic_net)
        actor.zero_grad()
        loss(batch)["loss_objective"].backward()
        partial = flat_grads(actor).clone()
        hook = ImplicitGradientHook(
            loss, CriticLoss(critic_net), solver=FollowerSolver(3.0, tol=1e-10), gamma=GAMMA, regularization_scale=scale
        )
        hook(batch)
        return flat_grads(actor) - partial

    scaled = ValueOperator(torch.nn.Sequential(critic.module, Times(10.0)), in_keys=["observation"])
    base = correction(critic, td["value_target"])
    big = correction(scaled, 10.0 * td["value_target"])
    if scale == "trace":
        torch.testing.assert_close(big, base, rtol=1e-4, atol=1e-7)
    else:
        assert (big - base).norm() > 0.1 * base.norm()
