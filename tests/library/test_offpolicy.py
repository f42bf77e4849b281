"""Stackelberg SAC against ground truth (docs/math.md §6).

A problem whose best responses have a closed form: a Gaussian actor with a linear mean, and Q
critics linear in fixed features of (s, a) with a concave a² term. On a fixed batch and noise draw:

* the critic's loss is quadratic in w, so w*(θ) is one exact Newton step (a least-squares solve);
* with one Q network and a fixed scale, the actor's loss is quadratic in θ, so θ*(w) is too.

The reference losses below are written independently of the library (``ref_losses``): the target
keeps its θ-gradient there, so a library target built under ``no_grad`` fails these tests.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torchrl.modules import IndependentNormal, ProbabilisticActor, TanhNormal

from torchrl_stac import FollowerSolver, StackelbergSACLoss, StackelbergUpdate
from torchrl_stac.offpolicy_losses import reparameterized

OBS, BATCH, GAMMA, ALPHA = 3, 24, 0.9, 0.3
pytestmark = pytest.mark.usefixtures("float64")


class Scale(nn.Module):
    """loc = θ·s (one action dimension), a fixed scale."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Linear(OBS, 1, bias=False)

    def forward(self, observation):
        loc = self.mean(observation)
        return loc, torch.full_like(loc, 0.7)


class QFeatures(nn.Module):
    """Q_w(s, a) = wᵀ[s, a, a², s·a] + b with the a² weight negative (concave in a)."""

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.head = nn.Linear(2 * OBS + 2, 1)
        with torch.no_grad():
            self.head.weight.copy_(0.5 * torch.randn(1, 2 * OBS + 2, generator=gen, dtype=torch.float64))
            self.head.weight[0, OBS + 1] = -1.0 - torch.rand((), generator=gen, dtype=torch.float64)
            self.head.bias.fill_(0.1 * seed)

    def forward(self, observation, action):
        features = torch.cat([observation, action, action.pow(2), observation * action], -1)
        return self.head(features)


def make_loss(num_q: int, distribution=IndependentNormal) -> StackelbergSACLoss:
    torch.manual_seed(1)
    actor = ProbabilisticActor(
        TensorDictModule(Scale(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=distribution,
        return_log_prob=True,
    )
    qs = [TensorDictModule(QFeatures(j), ["observation", "action"], ["state_action_value"]) for j in range(num_q)]
    loss = StackelbergSACLoss(actor, qs, gamma=GAMMA, alpha_init=ALPHA, fixed_alpha=True)
    with torch.no_grad():  # targets differ from the live networks
        for target in loss.target_qvalue_networks:
            for p in target.parameters():
                p.add_(0.05)
    return loss


def make_batch(seed: int = 0) -> TensorDict:
    gen = torch.Generator().manual_seed(seed)
    terminated = torch.rand(BATCH, 1, generator=gen) < 0.2
    return TensorDict(
        {
            "observation": torch.randn(BATCH, OBS, generator=gen),
            "action": torch.randn(BATCH, 1, generator=gen),
            ("next", "observation"): torch.randn(BATCH, OBS, generator=gen),
            ("next", "reward"): torch.randn(BATCH, 1, generator=gen),
            ("next", "terminated"): terminated,
            ("next", "done"): terminated.clone(),
        },
        batch_size=[BATCH],
    )


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@contextlib.contextmanager
def substituted(module: nn.Module, vector: torch.Tensor):
    """``module``'s parameters replaced by the pieces of ``vector`` (differentiably)."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    pieces = torch.split(vector, [s.numel() for s in shapes])
    params = TensorDict({n: x.view(s) for n, x, s in zip(names, pieces, shapes, strict=True)}, []).unflatten_keys(".")
    with params.to_module(module):
        yield


def ref_losses(loss: StackelbergSACLoss, td: TensorDict, theta: torch.Tensor, w: torch.Tensor):
    """(f_A, f_C) from scratch: Normal policy, min over the Q networks, a target that keeps θ."""
    actor_net = loss.actor_network.module[0].module
    q_nets = [net.module for net in loss.qvalue_networks]
    targets = [net.module for net in loss.target_qvalue_networks]
    sizes = [sum(p.numel() for p in net.parameters()) for net in q_nets]
    noise = td["sac_noise"]
    with contextlib.ExitStack() as stack:
        stack.enter_context(substituted(actor_net, theta))
        for net, piece in zip(q_nets, torch.split(w, sizes), strict=True):
            stack.enter_context(substituted(net, piece))

        def policy(observation, eps):
            loc, scale = actor_net(observation)
            action = loc + scale * eps
            return action, torch.distributions.Normal(loc, scale).log_prob(action).sum(-1)

        action, log_pi = policy(td["observation"], noise[..., 0, :])
        q_min = torch.stack([net(td["observation"], action).squeeze(-1) for net in q_nets]).min(0).values
        f_actor = (ALPHA * log_pi - q_min).mean()
        next_action, next_log_pi = policy(td["next", "observation"], noise[..., 1, :])
        next_q = torch.stack([net(td["next", "observation"], next_action).squeeze(-1) for net in targets]).min(0)
        alive = (~td["next", "terminated"]).squeeze(-1).double()
        y = td["next", "reward"].squeeze(-1) + GAMMA * alive * (next_q.values - ALPHA * next_log_pi)
        f_critic = sum(((net(td["observation"], td["action"]).squeeze(-1) - y) ** 2).mean() for net in q_nets)
    return f_actor, f_critic


def library_gradients(
    loss: StackelbergSACLoss, td: TensorDict, *, leader="actor", hessian="exact", correction_every=1, **solver_options
):
    solver = FollowerSolver(solver_options.pop("regularization", 0.0), **solver_options)
    update = StackelbergUpdate(loss, leader=leader, solver=solver, hessian=hessian, correction_every=correction_every)
    diagnostics = update(td)
    theta_grad = torch.cat([p.grad.reshape(-1) for p in loss.actor_params])
    w_grad = torch.cat([p.grad.reshape(-1) for p in loss.critic_params])
    return theta_grad, w_grad, diagnostics


def set_params(params, vector):
    with torch.no_grad():
        for p, piece in zip(params, torch.split(vector, [p.numel() for p in params]), strict=True):
            p.copy_(piece.view_as(p))


def newton_best_response(f, x0: torch.Tensor) -> torch.Tensor:
    """argmin of a quadratic ``f`` as one exact Newton step, differentiable in whatever f closes over."""
    g = torch.autograd.grad(f(x0), x0, create_graph=True)[0]
    H = hessian(f, x0, create_graph=True)
    return x0 - torch.linalg.solve(H, g)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_actor_leader_total_gradient_is_the_exact_derivative_at_the_critics_best_response(solver):
    loss, td = make_loss(num_q=2), make_batch()
    loss.draw_noise(td)
    theta = flat(loss.actor_network).requires_grad_(True)
    w0 = flat(loss.qvalue_networks).requires_grad_(True)

    def w_star(th):
        return newton_best_response(lambda w: ref_losses(loss, td, th, w)[1], w0)

    exact = torch.autograd.grad(ref_losses(loss, td, theta, w_star(theta))[0], theta)[0]
    set_params(loss.critic_params, w_star(theta).detach())
    theta_grad, w_grad, diagnostics = library_gradients(loss, td, method=solver, cg_iterations=100, tol=1e-12)
    torch.testing.assert_close(theta_grad, exact, rtol=1e-7, atol=1e-9)
    assert w_grad.abs().max() < 1e-9  # the follower is at its best response
    assert diagnostics["implicit_norm"] > 1e-3 * diagnostics["partial_norm"]  # the coupling matters here


def test_critic_leader_total_gradient_is_the_exact_derivative_at_the_actors_best_response():
    loss, td = make_loss(num_q=1), make_batch(1)
    loss.draw_noise(td)
    theta0 = flat(loss.actor_network).requires_grad_(True)
    w = flat(loss.qvalue_networks).requires_grad_(True)

    def theta_star(w_):
        return newton_best_response(lambda th: ref_losses(loss, td, th, w_)[0], theta0)

    exact = torch.autograd.grad(ref_losses(loss, td, theta_star(w), w)[1], w)[0]
    set_params(loss.actor_params, theta_star(w).detach())
    theta_grad, w_grad, _ = library_gradients(loss, td, leader="critic", method="dense")
    torch.testing.assert_close(w_grad, exact, rtol=1e-7, atol=1e-9)
    assert theta_grad.abs().max() < 1e-9


@pytest.mark.parametrize("leader", ["actor", "critic"])
@pytest.mark.parametrize("lam", [0.3, 5.0])
def test_regularized_formula_away_from_equilibrium(leader, lam):
    """g₁ − (∂²f_F/∂p₁∂p₂)(∂²f_F/∂p₂² + λI)⁻¹ g₂ from explicit Jacobians and Hessians of the reference."""
    loss, td = make_loss(num_q=2), make_batch(2)
    loss.draw_noise(td)
    theta, w = flat(loss.actor_network), flat(loss.qvalue_networks)
    index = (0, 1) if leader == "actor" else (1, 0)  # (leader's loss, follower's loss) in ref_losses' output

    def pair(p1, p2):
        return (p1, p2) if leader == "actor" else (p2, p1)

    p1, p2 = pair(theta, w)
    f_leader = lambda a, b: ref_losses(loss, td, *pair(a, b))[index[0]]  # noqa: E731
    f_follower = lambda a, b: ref_losses(loss, td, *pair(a, b))[index[1]]  # noqa: E731
    g1 = jacobian(lambda a: f_leader(a, p2), p1)
    g2 = jacobian(lambda b: f_leader(p1, b), p2)
    H = hessian(lambda b: f_follower(p1, b), p2)
    M = jacobian(lambda a: jacobian(lambda b: f_follower(a, b), p2, create_graph=True), p1)  # [n2, n1]
    expected = g1 - M.T @ torch.linalg.solve(H + lam * torch.eye(len(p2)), g2)
    assert (M.T @ torch.linalg.solve(H + lam * torch.eye(len(p2)), g2)).norm() > 1e-3 * g1.norm()

    theta_grad, w_grad, diagnostics = library_gradients(loss, td, leader=leader, regularization=lam, method="dense")
    leader_grad, follower_grad = (theta_grad, w_grad) if leader == "actor" else (w_grad, theta_grad)
    torch.testing.assert_close(leader_grad, expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(follower_grad, jacobian(lambda b: f_follower(p1, b), p2), rtol=1e-7, atol=1e-9)
    assert diagnostics["regularization"] == pytest.approx(lam)


def test_the_target_keeps_its_theta_gradient_so_the_mixed_term_is_nonzero():
    """The coupling comes from y's θ-gradient: detached (TorchRL's SACLoss), ∂²f_C/∂θ∂w would vanish."""
    loss, td = make_loss(num_q=2), make_batch(3)
    loss.draw_noise(td)
    theta, w = flat(loss.actor_network), flat(loss.qvalue_networks)
    coupled = jacobian(lambda a: jacobian(lambda b: ref_losses(loss, td, a, b)[1], w, create_graph=True), theta)
    assert coupled.abs().max() > 1e-2
    f_critic = loss.qvalue_loss(td)
    grads = torch.autograd.grad(f_critic, loss.critic_params, create_graph=True)
    mixed = torch.autograd.grad(sum(g.sum() for g in grads), loss.actor_params, allow_unused=True)
    assert any(m is not None and m.abs().max() > 1e-6 for m in mixed)  # the library's target keeps θ


def test_both_players_see_the_same_minibatch_and_noise():
    loss, td = make_loss(num_q=2), make_batch(4)
    update = StackelbergUpdate(loss, solver=FollowerSolver(1.0, method="dense"))
    update(td)
    first = td["sac_noise"].clone()
    grads = [p.grad.clone() for p in loss.actor_params]
    update(td)  # the stored draw is reused: the same update again
    assert torch.equal(td["sac_noise"], first)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, loss.actor_params, strict=True))
    with torch.no_grad():
        f_actor, f_critic = ref_losses(loss, td, flat(loss.actor_network), flat(loss.qvalue_networks))
    diagnostics = update(td)
    assert diagnostics["loss_actor"] == pytest.approx(float(f_actor))
    assert diagnostics["loss_qvalue"] == pytest.approx(float(f_critic))
    fresh = td.exclude("sac_noise")
    update(fresh)
    assert not torch.equal(fresh["sac_noise"], first)  # a new minibatch gets a new draw


def test_reparameterized_tanh_normal_matches_its_log_prob():
    torch.manual_seed(0)
    loc, scale = torch.randn(5, 2), torch.rand(5, 2) + 0.2
    dist = TanhNormal(loc, scale, low=-2 * torch.ones(2), high=2 * torch.ones(2))
    noise = torch.randn(5, 2)
    action, log_prob = reparameterized(dist, noise)
    torch.testing.assert_close(action, 2 * torch.tanh(loc + scale * noise), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(log_prob, dist.log_prob(action), rtol=1e-6, atol=1e-8)


def test_gauss_newton_and_lanczos_diagnostics():
    loss, td = make_loss(num_q=2), make_batch(5)
    loss.draw_noise(td)
    w = flat(loss.qvalue_networks)
    H = hessian(lambda b: ref_losses(loss, td, flat(loss.actor_network), b)[1], w)  # f_C is quadratic: exact = GN
    eig = torch.linalg.eigvalsh(H)
    exact = library_gradients(loss, td, regularization=0.5, method="dense", eigenvalue_steps=len(w))
    gauss_newton = library_gradients(loss, td, regularization=0.5, method="dense", hessian="gauss_newton")
    torch.testing.assert_close(exact[0], gauss_newton[0], rtol=1e-8, atol=1e-10)
    assert exact[2]["hessian_eigenvalue_min"] == pytest.approx(float(eig[0]), rel=1e-4, abs=1e-5)
    assert exact[2]["hessian_eigenvalue_max"] == pytest.approx(float(eig[-1]), rel=1e-4)
    with pytest.raises(ValueError, match="Gauss-Newton"):
        StackelbergUpdate(loss, leader="critic", hessian="gauss_newton")


def test_correction_every_n_updates_is_plain_sac_in_between():
    from torchrl_stac import plain_gradients

    loss, td = make_loss(num_q=2), make_batch(6)
    update = StackelbergUpdate(loss, solver=FollowerSolver(1.0, method="dense"), correction_every=3)
    loss.draw_noise(td)
    assert update(td)["corrected"] == 1
    for _ in range(2):
        diagnostics = update(td)
        assert diagnostics["corrected"] == 0 and "regularization" not in diagnostics.keys()  # no solve, no λ
        theta_grad = torch.cat([p.grad.reshape(-1) for p in loss.actor_params]).clone()
        plain_gradients(loss, td)
        torch.testing.assert_close(theta_grad, torch.cat([p.grad.reshape(-1) for p in loss.actor_params]))
    assert update(td)["corrected"] == 1


# --------------------------------------------------------------------------- deterministic actor (TD3)
class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.mean = nn.Linear(OBS, 1, bias=False)

    def forward(self, observation):
        return self.mean(observation)


def make_td3_loss(num_q: int, ddpg: bool = False):
    from torchrl_stac import StackelbergDDPGLoss, StackelbergTD3Loss

    torch.manual_seed(1)
    actor = TensorDictModule(Linear(), ["observation"], ["action"])
    qs = [TensorDictModule(QFeatures(j), ["observation", "action"], ["state_action_value"]) for j in range(num_q)]
    bounds = {"action_low": -100.0, "action_high": 100.0, "gamma": GAMMA}
    loss = StackelbergDDPGLoss(actor, qs[0], **bounds) if ddpg else StackelbergTD3Loss(actor, qs, **bounds)
    with torch.no_grad():
        for target in loss.target_qvalue_networks:
            for p in target.parameters():
                p.add_(0.05)
    return loss


def ref_td3(loss, td, theta, w, policy_noise: float = 0.2):
    """(f_A, f_C) of TD3 from scratch: −Q₁(s, μ(s)); y with the smoothed μ_θ(s') keeping its gradient
    (DDPG: ``policy_noise=0``, one critic)."""
    actor_net = loss.actor_network.module
    q_nets = [net.module for net in loss.qvalue_networks]
    targets = [net.module for net in loss.target_qvalue_networks]
    sizes = [sum(p.numel() for p in net.parameters()) for net in q_nets]
    with contextlib.ExitStack() as stack:
        stack.enter_context(substituted(actor_net, theta))
        for net, piece in zip(q_nets, torch.split(w, sizes), strict=True):
            stack.enter_context(substituted(net, piece))
        f_actor = -q_nets[0](td["observation"], actor_net(td["observation"])).mean()
        smoothing = (policy_noise * td["sac_noise"][..., 1, :]).clamp(-0.5, 0.5)
        next_action = actor_net(td["next", "observation"]) + smoothing
        next_q = torch.stack([n(td["next", "observation"], next_action).squeeze(-1) for n in targets]).min(0).values
        alive = (~td["next", "terminated"]).squeeze(-1).double()
        y = td["next", "reward"].squeeze(-1) + GAMMA * alive * next_q
        f_critic = sum(((net(td["observation"], td["action"]).squeeze(-1) - y) ** 2).mean() for net in q_nets)
    return f_actor, f_critic


def test_td3_actor_leader_is_the_exact_derivative_at_the_critics_best_response():
    loss, td = make_td3_loss(num_q=2), make_batch(7)
    loss.draw_noise(td)
    theta = flat(loss.actor_network).requires_grad_(True)
    w0 = flat(loss.qvalue_networks).requires_grad_(True)

    def w_star(th):
        return newton_best_response(lambda w: ref_td3(loss, td, th, w)[1], w0)

    exact = torch.autograd.grad(ref_td3(loss, td, theta, w_star(theta))[0], theta)[0]
    set_params(loss.critic_params, w_star(theta).detach())
    theta_grad, w_grad, diagnostics = library_gradients(loss, td, method="dense")
    torch.testing.assert_close(theta_grad, exact, rtol=1e-7, atol=1e-9)
    assert w_grad.abs().max() < 1e-9
    assert diagnostics["implicit_norm"] > 1e-3 * diagnostics["partial_norm"]


def test_td3_critic_leader_is_the_exact_derivative_at_the_actors_best_response():
    loss, td = make_td3_loss(num_q=1), make_batch(8)
    loss.draw_noise(td)
    theta0 = flat(loss.actor_network).requires_grad_(True)
    w = flat(loss.qvalue_networks).requires_grad_(True)

    def theta_star(w_):
        return newton_best_response(lambda th: ref_td3(loss, td, th, w_)[0], theta0)

    exact = torch.autograd.grad(ref_td3(loss, td, theta_star(w), w)[1], w)[0]
    set_params(loss.actor_params, theta_star(w).detach())
    # hessian=None: a deterministic actor has no Fisher form, so its leader's own is the exact Hessian
    theta_grad, w_grad, _ = library_gradients(loss, td, leader="critic", hessian=None, method="dense")
    torch.testing.assert_close(w_grad, exact, rtol=1e-7, atol=1e-9)
    assert theta_grad.abs().max() < 1e-9


@pytest.mark.parametrize("leader", ["actor", "critic"])
def test_ddpg_total_gradient_is_the_exact_derivative_at_the_followers_best_response(leader):
    loss, td = make_td3_loss(num_q=1, ddpg=True), make_batch(9)
    assert len(loss.qvalue_networks) == 1 and loss.policy_noise == 0.0
    loss.draw_noise(td)
    theta = flat(loss.actor_network).requires_grad_(True)
    w = flat(loss.qvalue_networks).requires_grad_(True)

    def ref(th, w_):
        return ref_td3(loss, td, th, w_, policy_noise=0.0)

    if leader == "actor":
        w_star = newton_best_response(lambda w_: ref(theta, w_)[1], w)
        exact = torch.autograd.grad(ref(theta, newton_best_response(lambda w_: ref(theta, w_)[1], w))[0], theta)[0]
        set_params(loss.critic_params, w_star.detach())
        leader_grad, follower_grad, diagnostics = library_gradients(loss, td, method="dense")
    else:
        theta_star = newton_best_response(lambda th: ref(th, w)[0], theta)
        exact = torch.autograd.grad(ref(newton_best_response(lambda th: ref(th, w)[0], theta), w)[1], w)[0]
        set_params(loss.actor_params, theta_star.detach())
        follower_grad, leader_grad, diagnostics = library_gradients(loss, td, leader="critic", method="dense")
    torch.testing.assert_close(leader_grad, exact, rtol=1e-7, atol=1e-9)
    assert follower_grad.abs().max() < 1e-9
    assert diagnostics["implicit_norm"] > 1e-3 * diagnostics["partial_norm"]


def test_plain_sac_losses_and_gradients_equal_torchrl_sacloss():
    """With a near-zero policy scale (ã = tanh(loc)) and a negligible α both implementations are
    deterministic, so our f_A, f_C and their gradients must equal TorchRL's ``SACLoss`` (l2 loss, TD(0))."""
    from torchrl.modules import MLP, ValueOperator
    from torchrl.objectives import SACLoss

    obs_dim, act_dim, batch = 4, 2, 64

    class LocAndTinyScale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=[16])

        def forward(self, observation):
            loc = self.net(observation)
            return loc, torch.full_like(loc, 1e-6)

    def q_network():
        mlp = MLP(in_features=obs_dim + act_dim, out_features=1, num_cells=[16])
        return ValueOperator(mlp, in_keys=["observation", "action"])

    torch.manual_seed(0)
    actor = ProbabilisticActor(
        TensorDictModule(LocAndTinyScale(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -torch.ones(act_dim), "high": torch.ones(act_dim)},
    )
    reference = SACLoss(
        actor,
        q_network(),
        num_qvalue_nets=2,
        loss_function="l2",
        alpha_init=1e-8,
        fixed_alpha=True,
        target_entropy=-float(act_dim),
    )
    reference.make_value_estimator(gamma=0.99)
    twins = [q_network() for _ in range(2)]
    with torch.no_grad():
        for index, network in enumerate(twins):  # the same twin weights as TorchRL's stacked copies
            TensorDict.from_module(network).data.copy_(reference.qvalue_network_params[index].data)
    ours = StackelbergSACLoss(actor, twins, gamma=0.99, alpha_init=1e-8, fixed_alpha=True)
    terminated = torch.rand(batch, 1) < 0.2
    td = TensorDict(
        {
            "observation": torch.randn(batch, obs_dim),
            "action": torch.rand(batch, act_dim) * 2 - 1,
            "next": {
                "observation": torch.randn(batch, obs_dim),
                "reward": torch.randn(batch, 1),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        [batch],
    )
    expected, got = reference(td.clone()), ours(td.clone())
    assert got["loss_qvalue"].item() > 0.1 and terminated.any() and not terminated.all()
    for key in ("loss_actor", "loss_qvalue"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
    actor_grads = torch.autograd.grad(got["loss_actor"], ours.actor_params)
    expected_actor_grads = torch.autograd.grad(expected["loss_actor"], ours.actor_params)
    torch.testing.assert_close(actor_grads, expected_actor_grads, rtol=1e-4, atol=1e-6)
    critic_grads = torch.autograd.grad(got["loss_qvalue"], ours.critic_params)
    stacked = list(reference.qvalue_network_params.values(True, True))
    expected_critic = torch.autograd.grad(expected["loss_qvalue"], stacked)
    for ours_per_net, index in ((critic_grads[: len(stacked)], 0), (critic_grads[len(stacked) :], 1)):
        torch.testing.assert_close(list(ours_per_net), [g[index] for g in expected_critic], rtol=1e-4, atol=1e-6)
