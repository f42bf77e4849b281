"""Stackelberg SAC: the soft actor-critic losses with a coupled follower, and the total-gradient update.

STAC_MATH §5–5a. Both players' losses depend on both parameter sets through ordinary autograd:

* actor (θ):  f_A(θ, w) = mean_B[α log π_θ(ã|s) − min_j Q_wj(s, ã)],  ã = rsample π_θ(·|s);
* critic (w = both twin Q networks): f_C(θ, w) = Σ_j mean_B[(Q_wj(s, a) − y)²],
  y = r + γ (1 − terminated) (min_j Q̄_j(s', a') − α log π_θ(a'|s')),  a' = rsample π_θ(·|s').

Unlike TorchRL's ``SACLoss`` the target y keeps its θ-gradient (the target networks Q̄ are frozen,
not w): this is where the players are coupled, ∇_θ∇_w f_C = −2 E[∇_w Q_w(s, a) ∇_θ y(θ)ᵀ] ≠ 0. The
entropy temperature α is neither player's parameter: ``loss_alpha`` trains it as usual.

:class:`StackelbergSACLoss` draws one noise sample per call for ã and for a' and stores it in the
batch, so that the leader's and the follower's losses see the same minibatch and the same draw.
:class:`StackelbergUpdate` writes into ``.grad`` the leader's total gradient
``∇₁f_L − (∇₁₂f_F)(∇₂₂f_F + λI)⁻¹ ∇₂f_L`` and the follower's ordinary gradient ∇₂f_F, for
``leader="actor"`` or ``leader="critic"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from tensordict.utils import NestedKey
from torch import distributions as D
from torchrl.objectives import LossModule

from torchrl_stac.curvature import flatten, hvp_from_grad, unflatten
from torchrl_stac.diagnostics import as_tensordict, check_choices, gradient_diagnostics, solve_diagnostics
from torchrl_stac.losses import check_finite, require
from torchrl_stac.regularization import Regularization, regularization_at
from torchrl_stac.solvers import SolveResult, solve_regularized


def reparameterized(dist: D.Distribution, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(action, log π(action))`` for the standard-normal ``noise``, differentiable in the parameters.

    Handles a (possibly ``Independent``) ``Normal`` and a ``TransformedDistribution`` over one, such
    as TorchRL's ``TanhNormal``; the log-probability is computed from the pre-transform sample, so
    no ``atanh`` is inverted. ``log π`` is summed over the action dimensions: shape ``[*B]``.
    """
    transforms = list(dist.transforms) if isinstance(dist, D.TransformedDistribution) else []
    base = dist.base_dist if transforms else dist
    normal = base.base_dist if isinstance(base, D.Independent) else base
    if not isinstance(normal, D.Normal):
        raise TypeError(f"reparameterized sampling needs a Normal-based distribution, got {type(dist).__name__}.")
    sample = normal.loc + normal.scale * noise
    log_prob = base.log_prob(sample)
    event_dims = len(dist.event_shape)
    for transform in transforms:
        out = transform(sample)
        jacobian = transform.log_abs_det_jacobian(sample, out)
        extra = event_dims - transform.domain.event_dim
        log_prob = log_prob - (jacobian.sum(tuple(range(-extra, 0))) if extra > 0 else jacobian)
        sample = out
    if log_prob.ndim == sample.ndim:  # a plain Normal: per-dimension log-probs
        log_prob = log_prob.sum(-1)
    return sample, log_prob


class StackelbergSACLoss(LossModule):
    """The two players of Stackelberg SAC on one minibatch, TensorDict in, TensorDict out.

    Args:
        actor_network: a probabilistic actor (``get_dist``) over a Normal or TanhNormal.
        qvalue_networks: the critic's Q networks (twin: two), each reading ``observation`` and
            ``action`` and writing ``state_action_value``; together they are the follower's w.
        gamma: discount.
        alpha_init: initial entropy temperature α.
        target_entropy: α's target; ``"auto"``: −(action dimensions).
        fixed_alpha: keep α constant (no ``loss_alpha`` gradient).

    ``forward`` returns ``loss_actor`` (f_A), ``loss_qvalue`` (f_C), ``loss_alpha``, ``alpha`` and
    ``entropy``; a plain SAC step backpropagates each into its own parameters, a Stackelberg step
    hands them to :class:`StackelbergUpdate`. Target networks: ``target_qvalue_networks`` (copies,
    updated by :meth:`update_targets`, τ-averaging as TorchRL's ``SoftUpdate``).
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys, configurable with ``set_keys``.

        Attributes:
            action: the stored action. Defaults to ``"action"``.
            state_action_value: the Q networks' output. Defaults to ``"state_action_value"``.
            reward, done, terminated: read under ``"next"``.
            noise: where the per-call standard-normal draws are stored. Defaults to ``"sac_noise"``.
        """

        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        noise: NestedKey = "sac_noise"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_networks: Sequence[TensorDictModule],
        *,
        gamma: float = 0.99,
        alpha_init: float = 1.0,
        target_entropy: float | Literal["auto"] = "auto",
        fixed_alpha: bool = False,
    ):
        super().__init__()
        if not hasattr(actor_network, "get_dist"):
            raise TypeError("actor_network must be a probabilistic actor with get_dist(), e.g. a ProbabilisticActor.")
        if not qvalue_networks:
            raise ValueError("give at least one Q network (twin Q: two).")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        self.actor_network = actor_network
        self.qvalue_networks = torch.nn.ModuleList(qvalue_networks)
        self.target_qvalue_networks = torch.nn.ModuleList([_frozen_copy(network) for network in qvalue_networks])
        self.gamma = float(gamma)
        self.fixed_alpha = fixed_alpha
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(alpha_init)), requires_grad=not fixed_alpha)
        self._target_entropy = target_entropy

    @property
    def actor_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.actor_network.parameters() if p.requires_grad]

    @property
    def critic_params(self) -> list[torch.nn.Parameter]:
        return [p for net in self.qvalue_networks for p in net.parameters() if p.requires_grad]

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def target_entropy(self, action: torch.Tensor) -> float:
        return -float(action.shape[-1]) if self._target_entropy == "auto" else float(self._target_entropy)

    @torch.no_grad()
    def update_targets(self, tau: float = 0.005) -> None:
        """Q̄ ← (1 − τ) Q̄ + τ Q (Polyak averaging)."""
        for net, target in zip(self.qvalue_networks, self.target_qvalue_networks, strict=True):
            for p, q in zip(net.parameters(), target.parameters(), strict=True):
                q.lerp_(p, tau)

    def draw_noise(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Store one standard-normal draw for ã (``[*B, A]``) and one for a' under the noise key."""
        action = require(tensordict, self.tensor_keys.action, "The losses need the stored actions.")
        noise = torch.randn(2, *action.shape, dtype=action.dtype, device=action.device)
        tensordict.set(self.tensor_keys.noise, noise.movedim(0, -2).contiguous())
        return tensordict

    def _noise(self, tensordict: TensorDictBase, index: int) -> torch.Tensor:
        hint = "call draw_noise(batch) first (one draw shared by both players' losses)."
        return require(tensordict, self.tensor_keys.noise, hint)[..., index, :]

    def _policy_sample(self, observation_td: TensorDictBase, noise: torch.Tensor):
        dist = self.actor_network.get_dist(observation_td.select(*self.actor_network.in_keys).copy())
        return reparameterized(dist, noise)

    def _q_values(self, networks, observation_td: TensorDictBase, action: torch.Tensor) -> torch.Tensor:
        """``[J, *B]``: each network's Q(s, action)."""
        values = []
        for network in networks:
            td = observation_td.select(*[k for k in network.in_keys if k != self.tensor_keys.action]).copy()
            td.set(self.tensor_keys.action, action)
            values.append(network(td).get(self.tensor_keys.state_action_value).squeeze(-1))
        return torch.stack(values)

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """f_A(θ, w) = mean[α log π_θ(ã|s) − min_j Q_wj(s, ã)] and log π_θ(ã|s) (``[*B]``)."""
        action, log_prob = self._policy_sample(tensordict, self._noise(tensordict, 0))
        q_min = self._q_values(self.qvalue_networks, tensordict, action).min(0).values
        return (self.alpha * log_prob - q_min).mean(), log_prob

    def _target_action(self, next_td: TensorDictBase, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a' for the target and its log π_θ(a'|s') (differentiable in θ)."""
        return self._policy_sample(next_td, noise)

    def qvalue_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """f_C(θ, w) = Σ_j mean[(Q_wj(s, a) − y)²]; y keeps its θ-gradient through a' and log π_θ(a'|s')."""
        next_td = tensordict.get("next")
        next_action, next_log_prob = self._target_action(next_td, self._noise(tensordict, 1))
        next_q = self._q_values(self.target_qvalue_networks, next_td, next_action).min(0).values
        reward = next_td.get(self.tensor_keys.reward).reshape(next_q.shape)
        terminated = next_td.get(self.tensor_keys.terminated).reshape(next_q.shape)
        target = reward + self.gamma * (~terminated).to(reward.dtype) * (next_q - self.alpha * next_log_prob)
        stored_action = tensordict.get(self.tensor_keys.action)
        q = self._q_values(self.qvalue_networks, tensordict, stored_action)
        return (q - target).pow(2).mean(-1 if q.ndim == 2 else tuple(range(1, q.ndim))).sum()

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.tensor_keys.noise not in tensordict.keys(True):
            self.draw_noise(tensordict)
        loss_actor, log_prob = self.actor_loss(tensordict)
        loss_qvalue = self.qvalue_loss(tensordict)
        check_finite(loss_actor, "loss_actor")
        check_finite(loss_qvalue, "loss_qvalue")
        action = tensordict.get(self.tensor_keys.action)
        entropy = -log_prob.detach().mean()
        loss_alpha = -self.log_alpha * (self.target_entropy(action) - entropy)
        return TensorDict(
            {
                "loss_actor": loss_actor,
                "loss_qvalue": loss_qvalue,
                "loss_alpha": loss_alpha if not self.fixed_alpha else loss_alpha.detach(),
                "alpha": self.alpha,
                "entropy": entropy,
            },
            batch_size=[],
        )


class StackelbergTD3Loss(StackelbergSACLoss):
    """The two players of Stackelberg TD3 / DDPG: a deterministic actor μ_θ and twin Q critics.

    * actor: f_A(θ, w) = −mean Q_w1(s, μ_θ(s)) (TD3 uses the first critic);
    * critics: f_C(θ, w) = Σ_j mean[(Q_wj(s, a) − y)²], y = r + γ(1 − terminated) min_j Q̄_j(s', a'),
      a' = clamp(μ_θ(s') + clamp(σ ε, −c, c), low, high).

    The coupling comes from the target action a' = μ_θ(s') + noise, which must come from the
    current actor WITH its θ-gradient (TorchRL's ``TD3Loss`` computes it under ``no_grad`` from the
    target actor, and the mixed term vanishes). No entropy term: α is fixed and unused.

    Args:
        actor_network: a module writing the action (``action`` key) from ``observation``.
        qvalue_networks: the twin critics.
        action_low, action_high: the action bounds of the target action.
        policy_noise, noise_clip: TD3's target smoothing σ and c.
    """

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_networks: Sequence[TensorDictModule],
        *,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        gamma: float = 0.99,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
    ):
        LossModule.__init__(self)
        if not qvalue_networks:
            raise ValueError("give at least one Q network (twin Q: two).")
        self.actor_network = actor_network
        self.qvalue_networks = torch.nn.ModuleList(qvalue_networks)
        self.target_qvalue_networks = torch.nn.ModuleList([_frozen_copy(n) for n in qvalue_networks])
        self.gamma = float(gamma)
        self.fixed_alpha = True
        self.log_alpha = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # α = 1, multiplies a zero term
        self._target_entropy = 0.0
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.get_default_dtype()))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.get_default_dtype()))
        self.policy_noise, self.noise_clip = float(policy_noise), float(noise_clip)

    def _deterministic(self, observation_td: TensorDictBase) -> torch.Tensor:
        td = observation_td.select(*self.actor_network.in_keys).copy()
        return self.actor_network(td).get(self.tensor_keys.action)

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """f_A(θ, w) = −mean Q_w1(s, μ_θ(s)); the second output (log-probs) is zero."""
        action = self._deterministic(tensordict)
        q_first = self._q_values(self.qvalue_networks[:1], tensordict, action)[0]
        return -q_first.mean(), torch.zeros_like(q_first)

    def _target_action(self, next_td: TensorDictBase, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        smoothing = (self.policy_noise * noise).clamp(-self.noise_clip, self.noise_clip)
        action = torch.clamp(self._deterministic(next_td) + smoothing, min=self.action_low, max=self.action_high)
        return action, torch.zeros(action.shape[:-1], dtype=action.dtype, device=action.device)


def _frozen_copy(network: torch.nn.Module) -> torch.nn.Module:
    import copy

    target = copy.deepcopy(network)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def plain_gradients(loss: StackelbergSACLoss, tensordict: TensorDictBase) -> TensorDictBase:
    """SAC's step: each player's ``.grad`` is its own partial gradient (∇_θ f_A, ∇_w f_C), α's its own.

    With partial gradients only, the target's θ-dependence plays no role: this is TorchRL's SAC.
    """
    losses = loss(tensordict)
    for value, params in ((losses["loss_actor"], loss.actor_params), (losses["loss_qvalue"], loss.critic_params)):
        for param, grad in zip(params, torch.autograd.grad(value, params, retain_graph=True), strict=True):
            param.grad = grad
    if not loss.fixed_alpha:
        loss.log_alpha.grad = torch.autograd.grad(losses["loss_alpha"], loss.log_alpha)[0]
    return losses.detach()


_CHOICES = {
    "leader": ("actor", "critic"),
    "solver": ("cg", "dense"),
    "hessian": ("exact", "gauss_newton"),
    "on_nonfinite": ("raise", "skip"),
}


class StackelbergUpdate:
    """Stackelberg gradients for :class:`StackelbergSACLoss`: leader's total, follower's ordinary.

    ``update(batch)`` draws the noise once (a batch that already carries a draw keeps it),
    evaluates f_A and f_C on the same minibatch and draw, and sets ``.grad`` of the leader's
    parameters to ``∇₁f_L − (∇₁₂f_F)(∇₂₂f_F + λI)⁻¹ ∇₂f_L`` (solved by CG on Hessian-vector
    products of f_F, warm-started, or densely), of the follower's to ∇₂f_F, and of ``log_alpha``
    to ∇ loss_alpha. Then step the optimizers and the targets.

    Args:
        loss: the two players' losses.
        leader: ``"actor"`` (θ leads; the critic best-responds) or ``"critic"`` (w leads; the
            actor's Hessian is inverted).
        regularization: λ ≥ 0, a float or a callable ``update index -> λ``.
        solver, max_iter, tol, warm_start: as :class:`~torchrl_stac.ImplicitGradientHook`.
        hessian: ``"exact"`` or ``"gauss_newton"`` (critic follower only: (2/B) Σ_j J_jᵀJ_j).
        curvature_fallback: ``"gauss_newton"`` re-solves with the Gauss-Newton matrix when CG meets
            non-positive curvature (critic follower only).
        on_nonfinite: ``"raise"``, or ``"skip"`` the correction (plain gradients) with ``skipped=1``.
        eigenvalue_steps: Lanczos steps for the extreme eigenvalues of the follower's Hessian
            (0: not computed; the authors log them each epoch).
        correction_every: correct the leader's gradient on one update in ``n``; the others are
            plain SAC updates (``corrected = 0`` in their diagnostics).
    """

    def __init__(
        self,
        loss: StackelbergSACLoss,
        *,
        leader: Literal["actor", "critic"] = "actor",
        regularization: Regularization = 0.0,
        solver: Literal["cg", "dense"] = "cg",
        max_iter: int = 10,
        tol: float = 1e-6,
        warm_start: bool = True,
        hessian: Literal["exact", "gauss_newton"] = "exact",
        curvature_fallback: Literal["gauss_newton"] | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        eigenvalue_steps: int = 0,
        correction_every: int = 1,
    ):
        options = dict(leader=leader, solver=solver, hessian=hessian, on_nonfinite=on_nonfinite)
        check_choices(options, _CHOICES)
        if (hessian == "gauss_newton" or curvature_fallback) and leader == "critic":
            raise ValueError("the Gauss-Newton matrix exists for the critic's squared error only: use leader='actor'.")
        if max_iter < 1 or eigenvalue_steps < 0 or correction_every < 1:
            raise ValueError("max_iter and correction_every must be >= 1, eigenvalue_steps >= 0.")
        regularization_at(regularization, 0)
        self.loss = loss
        self.leader = leader
        self.regularization = regularization
        self.solver, self.max_iter, self.tol, self.warm_start = solver, max_iter, tol, warm_start
        self.hessian, self.curvature_fallback = hessian, curvature_fallback
        self.on_nonfinite, self.eigenvalue_steps = on_nonfinite, eigenvalue_steps
        self.correction_every = correction_every
        self.num_updates = 0
        self._previous_solution: torch.Tensor | None = None

    def players(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """(leader's parameters, follower's parameters)."""
        actor, critic = self.loss.actor_params, self.loss.critic_params
        return (actor, critic) if self.leader == "actor" else (critic, actor)

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Set every player's ``.grad`` for one update on ``tensordict``; returns diagnostics."""
        lam = regularization_at(self.regularization, self.num_updates)
        self.num_updates += 1
        if self.loss.tensor_keys.noise not in tensordict.keys(True):
            self.loss.draw_noise(tensordict)  # one draw for both players (kept if the batch has one)
        if (self.num_updates - 1) % self.correction_every:
            return (
                plain_gradients(self.loss, tensordict)
                .select("loss_actor", "loss_qvalue")
                .update({"corrected": torch.zeros(()), "regularization": torch.tensor(float(lam))})
            )
        leader_params, follower_params = self.players()
        f_actor, log_prob = self.loss.actor_loss(tensordict)
        f_critic = self.loss.qvalue_loss(tensordict)
        check_finite(f_actor, "loss_actor")
        check_finite(f_critic, "loss_qvalue")
        f_leader, f_follower = (f_actor, f_critic) if self.leader == "actor" else (f_critic, f_actor)

        grad_1 = torch.autograd.grad(f_leader, leader_params, retain_graph=True, materialize_grads=True)
        grad_2 = flatten(torch.autograd.grad(f_leader, follower_params, retain_graph=True, materialize_grads=True))
        follower_grad = torch.autograd.grad(f_follower, follower_params, create_graph=True, materialize_grads=True)
        hvp = hvp_from_grad(follower_grad, follower_params)
        if self.hessian == "gauss_newton":
            hvp = self._gauss_newton(tensordict)
        x0 = self._previous_solution if self.warm_start else None
        result = solve_regularized(hvp, grad_2, lam, solver=self.solver, max_iter=self.max_iter, tol=self.tol, x0=x0)
        fell_back = False
        if result.nonpositive_curvature and self.curvature_fallback == "gauss_newton" and self.hessian == "exact":
            result = solve_regularized(
                self._gauss_newton(tensordict), grad_2, lam, solver=self.solver, max_iter=self.max_iter, tol=self.tol
            )
            fell_back = True
        partial = flatten(grad_1).detach()
        correction = torch.zeros_like(partial)
        skipped = not torch.isfinite(result.solution).all()
        if not skipped:
            x = unflatten(result.solution.detach(), follower_params)
            inner = sum((g * xi).sum() for g, xi in zip(follower_grad, x, strict=True))
            correction = -flatten(torch.autograd.grad(inner, leader_params, retain_graph=True, materialize_grads=True))
            skipped = not torch.isfinite(correction).all()
        if skipped:
            message = f"non-finite Stackelberg correction at update {self.num_updates - 1} (λ = {lam})."
            if self.on_nonfinite == "raise":
                raise FloatingPointError(message + " Raise the regularization or lower the learning rates.")
            warnings.warn(message + " Plain gradients were used for this update.", stacklevel=2)
            correction = torch.zeros_like(partial)
            self._previous_solution = None
        else:
            self._previous_solution = result.solution.detach()
        eigenvalues = self._extreme_eigenvalues(hvp, grad_2) if self.eigenvalue_steps else None

        total = unflatten(partial + correction, leader_params)
        for param, grad in zip(leader_params, total, strict=True):
            param.grad = grad.detach().clone()
        for param, grad in zip(follower_params, follower_grad, strict=True):
            param.grad = grad.detach().clone()
        if not self.loss.fixed_alpha:
            entropy = -log_prob.detach().mean()
            action = tensordict.get(self.loss.tensor_keys.action)
            loss_alpha = -self.loss.log_alpha * (self.loss.target_entropy(action) - entropy)
            self.loss.log_alpha.grad = torch.autograd.grad(loss_alpha, self.loss.log_alpha)[0]
        return self._diagnostics(f_actor, f_critic, partial, correction, lam, result, fell_back, skipped, eigenvalues)

    def _gauss_newton(self, tensordict: TensorDictBase):
        """``v ↦ (2/B) Σ_j J_jᵀ J_j v`` for the critic's squared error, J_j = ∂Q_wj(s, a)/∂w."""
        stored_action = tensordict.get(self.loss.tensor_keys.action)
        q = self.loss._q_values(self.loss.qvalue_networks, tensordict, stored_action)  # [J, *B]
        params = self.loss.critic_params
        dummy = torch.zeros_like(q, requires_grad=True)
        vjp = torch.autograd.grad(q, params, dummy, create_graph=True, materialize_grads=True)
        scale = 2.0 / q[0].numel()

        def matvec(v: torch.Tensor) -> torch.Tensor:
            jv = torch.autograd.grad(vjp, dummy, unflatten(v, params), retain_graph=True)[0]
            return scale * flatten(torch.autograd.grad(q, params, jv, retain_graph=True, materialize_grads=True))

        return matvec

    def _extreme_eigenvalues(self, hvp, start: torch.Tensor) -> tuple[float, float]:
        """(smallest, largest) Ritz values of the follower's Hessian after ``eigenvalue_steps`` Lanczos steps."""
        steps = min(self.eigenvalue_steps, start.numel())
        q = start / start.norm().clamp_min(1e-30)
        previous = torch.zeros_like(q)
        alphas, betas = [], []
        beta = 0.0
        for _ in range(steps):
            w = hvp(q).detach() - beta * previous
            alpha = float(q @ w)
            w = w - alpha * q
            alphas.append(alpha)
            beta = float(w.norm())
            if beta < 1e-10:
                break
            betas.append(beta)
            previous, q = q, w / beta
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if len(alphas) > 1:
            off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz = torch.linalg.eigvalsh(tridiagonal)
        return float(ritz[0]), float(ritz[-1])

    @staticmethod
    def _diagnostics(f_actor, f_critic, partial, correction, lam, result: SolveResult, fell_back, skipped, eigen):
        values = {"loss_actor": f_actor.detach(), "loss_qvalue": f_critic.detach(), "corrected": 1.0}
        values.update(gradient_diagnostics(partial, correction, skipped))
        values.update(solve_diagnostics(lam, result, fell_back, skipped))
        if eigen is not None:
            values["hessian_eigenvalue_min"], values["hessian_eigenvalue_max"] = eigen
        return as_tensordict(values)

    def state_dict(self) -> dict:
        """Update counter (drives λ schedules) and the CG warm start."""
        return {"num_updates": self.num_updates, "previous_solution": self._previous_solution}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        self._previous_solution = state["previous_solution"]
