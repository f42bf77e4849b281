"""The Stackelberg correction of the on-policy actor's gradient (docs/math.md §2–4)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from torchrl_stac.curvature import (
    MatVec,
    exact_hvp,
    flatten,
    gauss_newton_hvp,
    unflatten,
    vjp_then_jvp,
)
from torchrl_stac.diagnostics import as_tensordict, check_choices, gradient_diagnostics, solve_diagnostics
from torchrl_stac.follower_solver import FollowerSolver
from torchrl_stac.onpolicy_leaders import Leader, as_leader
from torchrl_stac.onpolicy_losses import CriticLoss, as_batch, require
from torchrl_stac.solvers import SolveResult
from torchrl_stac.trajectories import discounted_forward_cumsum, episode_starts, segment_starts

_CHOICES = {
    "hessian": ("exact", "gauss_newton"),
    "start_states": ("all", "initial"),
    "psi": ("advantage", "return"),
    "regularization_scale": ("absolute", "trace"),
}
TRACE_PROBES = 4  # Rademacher probes of the Hutchinson estimate of tr(JᵀJ)


class ImplicitGradientHook:
    """Adds ``(∂²L/∂θ∂w)(∂²L/∂w² + λI)⁻¹ ∂J/∂w / σ`` to the actor parameters' ``.grad``.

    Call it after the critic's k-step inner loop and after the leader loss's backward (the
    actor's ``.grad`` then holds −∂J/∂θ / σ); after the call it holds −dJ/dθ / σ, so that the
    optimizer step follows the total derivative +dJ/dθ. σ is the leader loss's advantage scale.

    Two phases, which ``hook(batch)`` runs back to back on one on-policy batch:

    * :meth:`prepare` (once per collected batch, shape ``[N]`` or ``[B, T]``, time last):

      1. ``b = ∂J/∂w = mean_t ∇_w V_w(s_t)`` (or ``∇_w Q_w(s_t, a_t)`` for a Q critic);
      2. solve ``(H + λI) x = b`` with H the Hessian of the critic loss (exact or Gauss-Newton),
         by conjugate gradient on Hessian-vector products or by a dense solve;
      3. ``c_t = ∇_w V_w(s_t) · x`` for every step (one Jacobian-vector product);
      4. per-step weights ``ω_t = −2 Ψ_t C_t``, ``C_t`` the discounted cumulative sum of ``c``
         since the start of the trajectory piece (V critic; the Q critic uses docs/math.md §3),
         written to the batch under ``weight_key``.

    * :meth:`correct` (on the batch or any minibatch of it, after the leader's backward): adds
      ``M x / σ = ∇_θ (1/n) Σ_t f_t(θ) ω_t / σ`` to ``.grad``, with ``f_t = log π_θ(a_t|s_t)``,
      or the importance ratio ``ρ_t = π_θ/π_old`` for PPO leaders (see :mod:`torchrl_stac.leaders`).

    A PPO loop calls ``prepare(batch)`` after the advantages and ``hook.correct(minibatch)`` after
    each minibatch's backward; the weights travel with the minibatch.

    Args:
        actor_loss: the leader's loss: :class:`~torchrl_stac.StackelbergActorLoss` or TorchRL's
            ``A2CLoss``, ``PPOLoss``, ``ClipPPOLoss``, ``KLPENPPOLoss`` (keys read through their
            ``tensor_keys``). Its critic must be ``critic_loss``'s network.
        critic_loss: the follower's squared-error loss (its target key gives G). Defaults, for a
            TorchRL leader, to a :class:`CriticLoss` on its critic and its value-target key.
        solver: λ or its schedule, the solve (CG or dense), iterations, tolerance, warm start,
            the Gauss-Newton curvature fallback and the non-finite policy
            (:class:`~torchrl_stac.FollowerSolver`; default :meth:`FollowerSolver.safe`: λ from
            the conditioning, κ = 100, and the correction at most the partial gradient's norm).
        hessian: ``"exact"`` (double backward) or ``"gauss_newton"`` (positive semi-definite).
        start_states: ``"all"`` (every visited state starts its remaining trajectory) or
            ``"initial"`` (only true episode starts; needs ``step_count`` or ``is_init``).
        psi: Ψ_t, the estimate of Q^π(s_t, a_t): ``"advantage"`` (Â, lower variance) or
            ``"return"`` (the critic's target G).
        gamma: discount of the cumulative sum; defaults to the leader loss's value estimator's.
        done_key, traj_key: where trajectory boundaries are read.
        weight_key: where :meth:`prepare` writes ω_t.
        regularization_scale: ``"absolute"`` (λ as given) or ``"trace"``: λ times the mean
            diagonal of the Gauss-Newton matrix, tr((2/N) JᵀJ)/n (Hutchinson, 4 Rademacher probes
            drawn from a generator seeded by the update index). The correction is then invariant
            to the scale of the critic's outputs; with a fixed absolute λ it grows with their square.
    """

    def __init__(
        self,
        actor_loss: torch.nn.Module,
        critic_loss: CriticLoss | None = None,
        *,
        solver: FollowerSolver | None = None,
        hessian: Literal["exact", "gauss_newton"] = "exact",
        start_states: Literal["all", "initial"] = "all",
        psi: Literal["advantage", "return"] = "advantage",
        gamma: float | None = None,
        done_key: NestedKey = ("next", "done"),
        traj_key: NestedKey = ("collector", "traj_ids"),
        weight_key: NestedKey = "stackelberg_weight",
        regularization_scale: Literal["absolute", "trace"] = "absolute",
    ):
        self.leader: Leader = as_leader(actor_loss)
        if critic_loss is None:
            critic_loss = self.leader.follower()
        if not isinstance(critic_loss, CriticLoss):
            raise TypeError(f"critic_loss must be a CriticLoss, got {type(critic_loss).__name__}.")
        options = dict(hessian=hessian, start_states=start_states, psi=psi, regularization_scale=regularization_scale)
        check_choices(options, _CHOICES)
        self.actor_loss = actor_loss
        self.critic_loss = critic_loss
        self.actor_params = self.leader.actor_params
        self.critic_params = [p for p in critic_loss.value_network.parameters() if p.requires_grad]
        self._check_players()
        self.solver = solver or FollowerSolver.safe()
        self.hessian, self.start_states, self.psi = hessian, start_states, psi
        self.done_key, self.traj_key, self.weight_key = done_key, traj_key, weight_key
        self.regularization_scale = regularization_scale
        self.gamma = self._resolve_gamma(gamma)

    def _check_players(self) -> None:
        critic_ids = {id(p) for p in self.critic_params}
        actor_critic_ids = {id(p) for p in self.leader.critic.parameters() if p.requires_grad}
        if critic_ids != actor_critic_ids:
            raise ValueError(
                "actor/critic parameter mismatch: the leader loss's critic_network and "
                "critic_loss.value_network must be the same critic (the one the inner loop trains)."
            )
        if not self.actor_params or not self.critic_params:
            raise ValueError("both the actor and the critic need trainable parameters.")
        if critic_ids & {id(p) for p in self.actor_params}:
            raise ValueError(
                "the actor and the critic share parameters; the Stackelberg correction assumes "
                "disjoint leader and follower parameters. Use separate networks."
            )

    def _resolve_gamma(self, gamma: float | None) -> float:
        if gamma is None:
            gamma = self.leader.gamma
            if gamma is None:
                raise ValueError("pass gamma=: the actor loss's value estimator has no discount.")
        gamma = float(gamma)
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        return gamma

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        """:meth:`prepare` then :meth:`correct` on one batch; returns both phases' diagnostics."""
        self._partial_gradient()  # fail before the solve if the leader's backward is missing
        solve = self.prepare(tensordict)
        applied = self.correct(tensordict)
        applied["skipped"] = torch.maximum(solve["skipped"], applied["skipped"])
        return solve.update(applied)

    def prepare(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Solve for x on a whole batch and write the per-step weights ω_t under ``weight_key``.

        Returns the solve's diagnostics (``solver_iterations``, ``relative_residual``,
        ``nonpositive_curvature``, ``gauss_newton_fallback``, ``regularization``, ``skipped``).
        A non-finite solve raises or (``on_nonfinite="skip"``) writes ω = 0.
        """
        lam = self.solver.next_regularization()
        prediction = self.critic_loss.predict(tensordict)
        target = self.critic_loss.target(tensordict)
        loss = self.critic_loss.squared_error(prediction, target)
        # b = ∂J/∂w = Jᵀ 1/N; the same graph later gives c = J x
        rhs, critic_jvp = vjp_then_jvp(
            prediction, self.critic_params, torch.full_like(prediction, 1.0 / prediction.numel())
        )
        if not (torch.isfinite(loss) and torch.isfinite(rhs).all()):
            return self._skip_prepare(tensordict, "the critic loss or ∂J/∂w", lam)
        if self.regularization_scale == "trace":
            lam = lam * self._gauss_newton_scale(critic_jvp, rhs, prediction.numel())

        gauss_newton = gauss_newton_hvp(prediction, self.critic_params, 2.0 / prediction.numel(), critic_jvp)
        hessian = exact_hvp(loss, self.critic_params) if self.hessian == "exact" else gauss_newton
        lam = self.solver.regularize(lam, hessian, rhs)
        fallback = gauss_newton if self.hessian == "exact" else None
        result, fell_back = self.solver.solve(hessian, rhs, lam, fallback)
        eigenvalues = self.solver.logged_eigenvalues(hessian, rhs)
        if not torch.isfinite(result.solution).all():
            return self._skip_prepare(tensordict, "the Hessian solve (H + λI)⁻¹ ∂J/∂w", lam, result)

        c = critic_jvp(result.solution).detach()
        psi = self.leader.advantage(tensordict) if self.psi == "advantage" else target
        weights = self._surrogate_weights(tensordict, c, psi, prediction.detach(), target)
        if not torch.isfinite(weights).all():
            return self._skip_prepare(tensordict, "the correction's weights", lam, result)
        tensordict.set(self.weight_key, weights)
        return as_tensordict(solve_diagnostics(lam, result, fell_back, False, eigenvalues))

    def correct(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Add ``∇_θ (1/n) Σ_t f_t(θ) ω_t / σ`` over ``tensordict``'s n steps to the actor's ``.grad``.

        ``tensordict`` is the prepared batch or a minibatch of it (it must carry ``weight_key``);
        σ is the leader's advantage scale on these steps, as in its loss. Returns
        ``implicit_norm``, ``partial_norm``, ``total_norm``, ``correction_ratio``,
        ``cosine_partial_total`` and ``skipped``.
        """
        partial = self._partial_gradient()
        hint = "call hook.prepare(batch) on the whole batch first (it writes the per-step weights)."
        weights = as_batch(require(tensordict, self.weight_key, hint), tensordict, self.weight_key).detach()
        sigma = self.leader.advantage_scale(self.leader.advantage(tensordict))
        surrogate = (self.leader.surrogate_factor(tensordict) * weights).mean()
        grads = torch.autograd.grad(surrogate, self.actor_params, materialize_grads=True)
        correction = flatten(grads) / sigma
        if not torch.isfinite(correction).all():
            self.solver.nonfinite("the implicit correction")
            return as_tensordict(gradient_diagnostics(partial, torch.zeros_like(partial), skipped=True))
        correction, bounded = self.solver.bound(partial, correction)
        for param, piece in zip(self.actor_params, unflatten(correction, self.actor_params), strict=True):
            param.grad.add_(piece)
        return as_tensordict(gradient_diagnostics(partial, correction, False, bounded))

    def _gauss_newton_scale(self, critic_jvp: MatVec, like: torch.Tensor, samples: int) -> float:
        """tr((2/N) JᵀJ)/n by Hutchinson: E‖J v‖² = tr(JᵀJ) for Rademacher v (seeded per update)."""
        generator = torch.Generator(device=like.device).manual_seed(self.solver.num_updates)
        total = 0.0
        for _ in range(TRACE_PROBES):
            probe = torch.randint(0, 2, like.shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1
            total += float(critic_jvp(probe).detach().pow(2).sum())
        return 2.0 / samples * total / TRACE_PROBES / like.numel()

    def _partial_gradient(self) -> torch.Tensor:
        if all(p.grad is None for p in self.actor_params):
            raise RuntimeError("the actor parameters have no .grad: call loss_objective.backward() before the hook.")
        for p in self.actor_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        partial = flatten([p.grad for p in self.actor_params]).clone()
        if not torch.isfinite(partial).all():
            raise FloatingPointError(
                "the actor's partial gradient is not finite before the correction: the actor loss "
                "or the batch holds NaN/inf; refusing to step."
            )
        return partial

    def _surrogate_weights(
        self, td: TensorDictBase, c: torch.Tensor, psi: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-step weights ω_t with ``M x = (1/N) Σ_t ∇_θ log π(a_t|s_t) ω_t``, all of shape [*B]."""
        starts = segment_starts(td, done_key=self.done_key, traj_key=self.traj_key)
        if self.start_states == "initial":
            initial = episode_starts(td, done_key=self.done_key)
            c = c * initial
            starts = starts | initial
        cumulative = discounted_forward_cumsum(c, starts, self.gamma)
        if self.critic_loss.critic_type == "v":
            return -2.0 * psi * cumulative
        return 2.0 * (prediction - target) * c - 2.0 * psi * (cumulative - c)

    def _skip_prepare(
        self, td: TensorDictBase, what: str, lam: float, result: SolveResult | None = None
    ) -> TensorDictBase:
        self.solver.nonfinite(what, lam)
        td.set(self.weight_key, torch.zeros(td.batch_size, device=td.device))
        if result is None:
            result = SolveResult(torch.zeros(0), 0, float("nan"), False)
        return as_tensordict(solve_diagnostics(lam, result, False, skipped=True))

    def state_dict(self) -> dict[str, Any]:
        """The solver's state: the update counter (drives λ schedules) and the CG warm start."""
        return self.solver.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.solver.load_state_dict(state)
