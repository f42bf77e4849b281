"""Ground truth on a small tabular MDP (docs/math.md §9): exact policy evaluation by a linear solve.

* At the critic's best response w*(θ) and λ = 0, the Stackelberg formula equals the exact total
  derivative d/dθ J(θ, w*(θ)), for V and Q critics (``leader_total_gradient``).
* The hook's Monte-Carlo mixed-term estimators agree with their exact targets within a few
  standard errors, for both start-state conventions and both choices of Ψ.

The policy is a softmax table (a bias-free linear layer on one-hot states), the critics are
linear in fixed features with a bias, fewer features than states.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.autograd.functional import jacobian
from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator

from torchrl_stac import CriticLoss, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss, leader_total_gradient

S, A, GAMMA = 5, 2, 0.9
EPISODES, HORIZON = 40_000, 60
Z = 4.0  # agreement within Z standard errors, per parameter


pytestmark = pytest.mark.usefixtures("float64")


class Mdp:
    """Random 5-state, 2-action MDP; each step terminates with probability 0.2–0.4."""

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.terminate = 0.2 + 0.2 * torch.rand(S, A, generator=gen, dtype=torch.float64)
        moves = torch.rand(S, A, S, generator=gen, dtype=torch.float64) ** 2
        self.P = moves / moves.sum(-1, keepdim=True) * (1 - self.terminate).unsqueeze(-1)
        self.r = torch.randn(S, A, generator=gen, dtype=torch.float64)
        rho = torch.rand(S, generator=gen, dtype=torch.float64) + 0.1
        self.rho = rho / rho.sum()
        self.W = 0.8 * torch.randn(A, S, generator=gen, dtype=torch.float64)  # actor weight, logits = W[:, s]
        self.phi = torch.cat([torch.randn(S, 2, generator=gen, dtype=torch.float64), torch.ones(S, 1)], 1)
        self.psi = torch.cat([torch.randn(S, A, 2, generator=gen, dtype=torch.float64), torch.ones(S, A, 1)], 2)

    def policy(self, W):
        return torch.softmax(W.T, -1)  # [S, A]

    def values(self, W):
        """Exact V^π [S] and Q^π [S, A] by solving (I − γ P_π) V = r_π."""
        pi = self.policy(W)
        P_pi = torch.einsum("sa,sat->st", pi, self.P)
        V = torch.linalg.solve(torch.eye(S) - GAMMA * P_pi, (pi * self.r).sum(-1))
        return V, self.r + GAMMA * self.P @ V


def test_stackelberg_equals_exact_total_derivative_v_critic():
    mdp = Mdp()
    W = mdp.W.clone().requires_grad_(True)
    weights = mdp.rho  # L weights states by ρ

    def best_response(W_):
        V, _ = mdp.values(W_)
        X = mdp.phi
        return torch.linalg.solve(X.T @ (weights[:, None] * X), X.T @ (weights * V))

    def J(W_, w_):
        return mdp.rho @ (mdp.phi @ w_)

    exact = torch.autograd.grad(-J(W, best_response(W)), W)[0]
    w = best_response(W).detach().requires_grad_(True)
    follower = lambda: (weights * (mdp.phi @ w - mdp.values(W)[0]) ** 2).sum()  # noqa: E731
    for solver in ("dense", "cg"):
        total, result = leader_total_gradient(
            lambda: -J(W, w),
            follower,
            [W],
            [w],
            solver=FollowerSolver(method=solver, cg_iterations=50, tol=1e-10, warm_start=False),
        )
        torch.testing.assert_close(total[0], exact, rtol=1e-10, atol=1e-12)
        assert result.relative_residual < 1e-10
    assert exact.norm() > 1e-2  # J's θ-partial is zero: the whole derivative is the implicit term
    total, _ = leader_total_gradient(lambda: -J(W, w), follower, [W], [w], solver=FollowerSolver(1.0, method="dense"))
    assert not torch.allclose(total[0], exact, rtol=1e-3)  # λ > 0 is a different update


def test_stackelberg_equals_exact_total_derivative_q_critic():
    mdp = Mdp(seed=1)
    W = mdp.W.clone().requires_grad_(True)
    X = mdp.psi.reshape(S * A, -1)

    def weights(W_):
        return (mdp.rho[:, None] * mdp.policy(W_)).reshape(-1)  # s ∼ ρ, a ∼ π

    def best_response(W_):
        Q = mdp.values(W_)[1].reshape(-1)
        d = weights(W_)
        return torch.linalg.solve(X.T @ (d[:, None] * X), X.T @ (d * Q))

    def J(W_, w_):
        return weights(W_) @ (X @ w_)

    exact = torch.autograd.grad(-J(W, best_response(W)), W)[0]
    w = best_response(W).detach().requires_grad_(True)
    follower = lambda: (weights(W) * (X @ w - mdp.values(W)[1].reshape(-1)) ** 2).sum()  # noqa: E731
    total, _ = leader_total_gradient(lambda: -J(W, w), follower, [W], [w], solver=FollowerSolver(method="dense"))
    torch.testing.assert_close(total[0], exact, rtol=1e-10, atol=1e-12)
    partial = torch.autograd.grad(-J(W, w), W)[0]
    assert (total[0] - partial).norm() > 1e-2 * partial.norm()  # the implicit term matters here


class Features(nn.Module):
    """Fixed features of a one-hot state (and one-hot action): the critic is linear in them."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, observation, action=None):
        if action is None:
            return observation @ self.table
        return torch.einsum("ns,na,sak->nk", observation, action, self.table)


def sample_episodes(mdp: Mdp, seed: int):
    """Complete episodes, concatenated as a single-env collector would return them: [N] steps."""
    gen = torch.Generator().manual_seed(seed)
    pi = mdp.policy(mdp.W)
    state = torch.multinomial(mdp.rho, EPISODES, replacement=True, generator=gen)
    alive = torch.ones(EPISODES, dtype=torch.bool)
    states, actions, rewards, alives, ends = [], [], [], [], []
    for t in range(HORIZON):
        action = torch.multinomial(pi[state], 1, generator=gen).squeeze(-1)
        probs = mdp.P[state, action]  # sub-stochastic: the rest is termination
        probs = torch.cat([probs, 1 - probs.sum(-1, keepdim=True)], -1)
        nxt = torch.multinomial(probs.clamp_min(0), 1, generator=gen).squeeze(-1)
        end = (nxt == S) | (t == HORIZON - 1)
        states.append(state), actions.append(action), alives.append(alive.clone())
        rewards.append(mdp.r[state, action]), ends.append(end & alive)
        alive = alive & ~end
        state = torch.where(end, 0, nxt)
    s, a, r, live, end = (torch.stack(x, 1) for x in (states, actions, rewards, alives, ends))
    returns = torch.zeros_like(r)
    running = torch.zeros(EPISODES)
    for t in reversed(range(HORIZON)):
        running = r[:, t] + GAMMA * running * ~end[:, t]
        returns[:, t] = running
    steps = torch.arange(HORIZON).expand(EPISODES, HORIZON)
    episode = torch.arange(EPISODES)[:, None].expand(EPISODES, HORIZON)
    pick = lambda x: x[live]  # noqa: E731  (row-major: episodes back to back)
    n = int(live.sum())
    done = pick(end).unsqueeze(-1)
    td = TensorDict(
        {
            "observation": nn.functional.one_hot(pick(s), S).double(),
            "action": nn.functional.one_hot(pick(a), A).double(),
            "step_count": pick(steps).unsqueeze(-1),
            "value_target": pick(returns).unsqueeze(-1),
            ("collector", "traj_ids"): pick(episode),
            ("next", "done"): done,
            ("next", "terminated"): done.clone(),
        },
        batch_size=[n],
    )
    return td, pick(episode), pick(steps)


def make_players(mdp: Mdp, critic_type: str):
    logits = nn.Linear(S, A, bias=False)
    logits.weight.data.copy_(mdp.W)
    actor = ProbabilisticActor(
        TensorDictModule(logits, ["observation"], ["logits"]), in_keys=["logits"], distribution_class=OneHotCategorical
    )
    table = mdp.phi[:, :2] if critic_type == "v" else mdp.psi[..., :2]
    head = nn.Linear(2, 1)
    head.weight.data.copy_(torch.tensor([[0.3, -0.5]]))
    head.bias.data.fill_(0.2)
    in_keys = ["observation"] if critic_type == "v" else ["observation", "action"]
    critic = ValueOperator(
        nn.Sequential(Features(table), head) if critic_type == "v" else QHead(table, head), in_keys=in_keys
    )
    return actor, critic


class QHead(nn.Module):
    def __init__(self, table, head):
        super().__init__()
        self.features, self.head = Features(table), head

    def forward(self, observation, action):
        return self.head(self.features(observation, action))


def per_episode(values: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
    return torch.zeros(EPISODES, values.shape[-1]).index_add_(0, episode, values)


def hook_correction(actor, actor_loss, critic_loss, td, **options):
    for p in actor.parameters():
        p.grad = torch.zeros_like(p)
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=FollowerSolver(1.0, tol=1e-12), gamma=GAMMA, **options)
    hook(td)
    return actor.module[0].module.weight.grad.reshape(-1).clone()


def sampled(seed: int):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    mdp = Mdp(seed=seed)
    yield mdp, *sample_episodes(mdp, seed=seed + 1)
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def episodes_v():
    yield from sampled(2)


@pytest.fixture(scope="module")
def episodes_q():
    yield from sampled(4)


def critic_solution(features: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """x = (H + λI)⁻¹ b for a linear critic: H = (2/N) XᵀX, b = mean X (independent of the library)."""
    n = features.shape[0]
    H = 2.0 / n * features.T @ features
    return torch.linalg.solve(H + lam * torch.eye(features.shape[1]), features.mean(0))


def grad_log_pi(mdp: Mdp, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """∇_W log π(a|s) for the softmax table, flattened like W [A, S] → [N, A·S]."""
    out = torch.zeros(s.shape[0], A, S)
    out[torch.arange(s.shape[0]), :, s] = nn.functional.one_hot(a, A).double() - mdp.policy(mdp.W)[s]
    return out.reshape(s.shape[0], -1)


def forward_cumsum(c: torch.Tensor, episode: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """C_t = Σ_{i ≤ t} γ^{t−i} c_i within the episode, by a loop over the horizon."""
    grid = torch.zeros(EPISODES, HORIZON)
    grid[episode, steps] = c
    for t in range(1, HORIZON):
        grid[:, t] += GAMMA * grid[:, t - 1]
    return grid[episode, steps]


def assert_within_standard_errors(estimate, target, per_episode_terms, scale):
    """|estimate − target| ≤ Z s.e. per parameter, and the target is far above the noise."""
    se = per_episode_terms.std(0) * EPISODES**0.5 * scale
    gap = (estimate - target).abs()
    assert (gap <= Z * se).all(), f"gap / s.e. = {(gap / se).tolist()}"
    assert target.norm() > 10 * se.norm(), "target not resolved: the test would be toothless"


def v_critic_correction(mdp: Mdp, td: TensorDict, **options):
    """The hook's correction with the linear V critic, Ψ = G − V_w(s) as the advantage."""
    actor, critic = make_players(mdp, "v")
    s, a = td["observation"].argmax(-1), td["action"].argmax(-1)
    with torch.no_grad():
        v_w = critic(td.select("observation"))["state_value"].squeeze(-1)
    G = td["value_target"].squeeze(-1)
    td["advantage"] = (G - v_w).unsqueeze(-1)  # Ψ = G − V_w: a state baseline
    critic_loss, actor_loss = CriticLoss(critic), StackelbergActorLoss(actor, critic)
    return s, a, G, v_w, hook_correction(actor, actor_loss, critic_loss, td, **options)


@pytest.mark.parametrize("psi", ["return", "advantage"])
def test_v_critic_every_visited_state_estimator(episodes_v, psi):
    mdp, td, episode, steps = episodes_v
    s, a, G, v_w, estimate = v_critic_correction(mdp, td, psi=psi)

    n = td.shape[0]
    c_state = mdp.phi @ critic_solution(mdp.phi[s])  # c(s) = ∇_w V_w(s) · x
    Psi = G if psi == "return" else G - v_w
    terms = grad_log_pi(mdp, s, a) * (-2 * Psi * forward_cumsum(c_state[s], episode, steps))[:, None]
    torch.testing.assert_close(estimate, terms.sum(0) / n, rtol=1e-8, atol=1e-12)
    dV = jacobian(lambda W: mdp.values(W)[0], mdp.W).reshape(S, -1)  # ∂V^π(s)/∂W
    target_terms = -2 * c_state[s][:, None] * dV[s]  # −2 c(s) ∂V^π(s)/∂θ over the visited states
    assert_within_standard_errors(estimate, target_terms.mean(0), per_episode(terms - target_terms, episode), 1.0 / n)


@pytest.mark.parametrize("psi", ["return", "advantage"])
def test_v_critic_initial_state_estimator_is_proposition_1(episodes_v, psi):
    mdp, td, episode, steps = episodes_v
    s, a, G, v_w, estimate = v_critic_correction(mdp, td, psi=psi, start_states="initial")

    n = td.shape[0]
    x = critic_solution(mdp.phi[s])
    c_state = mdp.phi @ x
    # exact Proposition 1 differentiated in w: ∂/∂θ [2 E_ρ (V_w − V^π) c] = −2 E_ρ[c ∂V^π/∂θ]
    target = jacobian(lambda W: -2 * (mdp.rho * c_state * mdp.values(W)[0]).sum(), mdp.W).reshape(-1)
    Psi = G if psi == "return" else G - v_w
    c0 = c_state[s] * (steps == 0)
    terms = grad_log_pi(mdp, s, a) * (-2 * Psi * forward_cumsum(c0, episode, steps))[:, None]
    # the surrogate averages over the N steps (docs/math.md §2): rescale by N / episodes to E_τ
    scale = n / EPISODES
    assert_within_standard_errors(scale * estimate, target, per_episode(terms, episode), 1.0 / EPISODES)


@pytest.mark.parametrize("start_states", ["all", "initial"])
def test_q_critic_estimators(episodes_q, start_states):
    mdp, td, episode, steps = episodes_q
    actor, critic = make_players(mdp, "q")
    s, a = td["observation"].argmax(-1), td["action"].argmax(-1)
    G = td["value_target"].squeeze(-1)
    baseline = torch.linspace(-1, 1, S)
    td["advantage"] = (G - baseline[s]).unsqueeze(-1)  # Ψ = G − b(s)
    critic_loss, actor_loss = CriticLoss(critic), StackelbergActorLoss(actor, critic)
    assert critic_loss.critic_type == "q"
    estimate = hook_correction(actor, actor_loss, critic_loss, td, start_states=start_states)

    n = td.shape[0]
    features = torch.cat([mdp.psi[..., :2], torch.ones(S, A, 1)], -1)  # [S, A, 3] incl. bias
    w = torch.tensor([0.3, -0.5, 0.2])
    x = critic_solution(features[s, a])
    c_sa, q_w = features @ x, features @ w  # [S, A]
    Q = mdp.values(mdp.W)[1]
    first = 2 * (q_w[s, a] - G) * c_sa[s, a]
    c = c_sa[s, a]
    if start_states == "initial":
        first, c = first * (steps == 0), c * (steps == 0)
    earlier = forward_cumsum(c, episode, steps) - c  # C'_t: strictly earlier steps
    terms = grad_log_pi(mdp, s, a) * (first - 2 * (G - baseline[s]) * earlier)[:, None]
    torch.testing.assert_close(estimate, terms.sum(0) / n, rtol=1e-8, atol=1e-12)

    def mixed(W, weights):  # ∂/∂θ of 2 Σ weights(s)·π(a|s)(Q_w − Q^π)(s, a) c(s, a), Q_w and c fixed
        pi, Q_pi = mdp.policy(W), mdp.values(W)[1]
        return 2 * (weights[:, None] * pi * (q_w - Q_pi) * c_sa).sum()

    if start_states == "initial":
        target = jacobian(lambda W: mixed(W, mdp.rho), mdp.W).reshape(-1)
        assert_within_standard_errors(n / EPISODES * estimate, target, per_episode(terms, episode), 1 / EPISODES)
        return
    # every visited (s_t, a_t): E[first | s_t] = 2 Σ_a ∇π (Q_w − Q^π) c, E[rest | s_t, a_t] = −2 c ∂Q^π/∂θ
    k = ((q_w - Q) * c_sa).detach()
    d_pi = jacobian(lambda W: (mdp.policy(W) * k).sum(-1), mdp.W).reshape(S, -1)  # [S, A·S]
    dQ = jacobian(lambda W: mdp.values(W)[1], mdp.W).reshape(S, A, -1)
    target_terms = 2 * d_pi[s] - 2 * c_sa[s, a][:, None] * dQ[s, a]
    assert Q.abs().max() > 0
    assert_within_standard_errors(estimate, target_terms.mean(0), per_episode(terms - target_terms, episode), 1.0 / n)


@pytest.mark.parametrize("start_states", ["all", "initial"])
def test_ppo_importance_weighted_estimator_after_theta_moved(episodes_v, start_states):
    """A PPO epoch later θ has moved off the behaviour policy θ_old that sampled the batch.

    With ``ClipPPOLoss`` as the leader the correction weights each step by ρ_t = π_θ/π_old
    (``torchrl_stac.leaders``); its target is the mixed term of PPO's local surrogate,
    −2 E[c(s) ∂Ṽ_θ(s)/∂θ] with ∂Ṽ_θ(s)/∂θ = Σ_s' D_old(s, s') Σ_a ∇π_θ(a|s') Q^old(s', a),
    D_old = (I − γ P_old)⁻¹. The log-probability surrogate without ρ misses it.
    """
    from torchrl.objectives import ClipPPOLoss

    mdp, td, episode, steps = episodes_v
    td = td.clone()
    actor, critic = make_players(mdp, "v")
    W_new = mdp.W + 0.4 * torch.randn(A, S, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        actor.module[0].module.weight.copy_(W_new)
        v_w = critic(td.select("observation"))["state_value"].squeeze(-1)
    s, a = td["observation"].argmax(-1), td["action"].argmax(-1)
    G = td["value_target"].squeeze(-1)
    td["advantage"] = (G - v_w).unsqueeze(-1)  # Ψ = G − V_w: a state baseline
    td["action_log_prob"] = torch.log(mdp.policy(mdp.W))[s, a]  # the behaviour policy's log π_old(a|s)
    ppo = ClipPPOLoss(actor, critic, normalize_advantage=False, entropy_bonus=False)
    estimate = hook_correction(actor, ppo, CriticLoss(critic), td, start_states=start_states)

    n = td.shape[0]
    pi_old, pi_new = mdp.policy(mdp.W), mdp.policy(W_new)
    ratio = pi_new[s, a] / pi_old[s, a]
    grad_log_new = torch.zeros(n, A, S)
    grad_log_new[torch.arange(n), :, s] = nn.functional.one_hot(a, A).double() - pi_new[s]
    c_state = mdp.phi @ critic_solution(mdp.phi[s])
    c = c_state[s] if start_states == "all" else c_state[s] * (steps == 0)
    terms = (ratio * -2 * (G - v_w) * forward_cumsum(c, episode, steps))[:, None] * grad_log_new.reshape(n, -1)
    torch.testing.assert_close(estimate, terms.sum(0) / n, rtol=1e-8, atol=1e-12)

    Q_old = mdp.values(mdp.W)[1]
    D_old = torch.linalg.inv(torch.eye(S) - GAMMA * torch.einsum("sa,sat->st", pi_old, mdp.P))
    dV_surrogate = jacobian(lambda W: D_old @ (mdp.policy(W) * Q_old).sum(-1), W_new).reshape(S, -1)
    naive_terms = terms / ratio[:, None]  # log π_θ weighting, no importance ratio
    if start_states == "initial":
        target = -2 * (mdp.rho * c_state) @ dV_surrogate
        assert_within_standard_errors(n / EPISODES * estimate, target, per_episode(terms, episode), 1 / EPISODES)
        se = per_episode(naive_terms, episode).std(0) * EPISODES**-0.5
        assert ((n / EPISODES * naive_terms.sum(0) / n - target).abs() > Z * se).any()
        return
    target_terms = -2 * c_state[s][:, None] * dV_surrogate[s]
    assert_within_standard_errors(estimate, target_terms.mean(0), per_episode(terms - target_terms, episode), 1.0 / n)
    se = per_episode(naive_terms - target_terms, episode).std(0) * EPISODES**0.5 / n
    assert ((naive_terms.mean(0) - target_terms.mean(0)).abs() > Z * se).any()
