"""The off-policy update: every player's ``.grad`` for one minibatch, plain or Stackelberg (docs/math.md §6).

:func:`plain_gradients` is SAC's/TD3's step: each player's own partial gradient.
:class:`StackelbergUpdate` gives the leader its total derivative
``∇₁f_L − (∇₁₂f_F)(∇₂₂f_F + λI)⁻¹ ∇₂f_L`` and the follower its ordinary gradient ∇₂f_F, with
``leader="actor"`` or ``leader="critic"``. Then step the optimizers and ``loss.update_targets``.
"""

from __future__ import annotations

from typing import Literal

import torch
from tensordict import TensorDictBase

from torchrl_stac.curvature import MatVec, fisher_hvp, flatten, unflatten
from torchrl_stac.diagnostics import as_tensordict, gradient_diagnostics, solve_diagnostics
from torchrl_stac.follower_solver import FollowerSolver
from torchrl_stac.offpolicy_losses import TwinQLoss
from torchrl_stac.total_gradient import TotalGradient, total_gradient


def _set_alpha_gradient(loss: TwinQLoss, tensordict: TensorDictBase, log_prob: torch.Tensor) -> None:
    loss_alpha = loss.alpha_loss(tensordict, log_prob)
    if loss_alpha is not None:
        loss.log_alpha.grad = torch.autograd.grad(loss_alpha, loss.log_alpha)[0]


def default_hessian(leader: Literal["actor", "critic"], stochastic_actor: bool) -> Literal["exact", "fisher"]:
    """The follower curvature a leader inverts unless told: the policy's Fisher information when a
    stochastic actor (SAC's) follows the critic (with the actor's exact, indefinite Hessian that
    leader lost to SAC on HalfCheetah, benchmarks/RESULTS.md), else the exact Hessian."""
    return "fisher" if leader == "critic" and stochastic_actor else "exact"


def plain_gradients(loss: TwinQLoss, tensordict: TensorDictBase) -> TensorDictBase:
    """Each player's ``.grad`` is its own partial gradient (∇_θ f_A, ∇_w f_C), α's its own: TorchRL's
    SAC (the target's θ-dependence plays no role). Returns ``loss_actor``, ``loss_qvalue`` and the
    loss's extra outputs (SAC: ``loss_alpha``, ``alpha``, ``entropy``)."""
    loss_actor, log_prob, loss_qvalue = loss.player_losses(tensordict)
    for value, params in ((loss_actor, loss.actor_params), (loss_qvalue, loss.critic_params)):
        for param, grad in zip(params, torch.autograd.grad(value, params, retain_graph=True), strict=True):
            param.grad = grad
    _set_alpha_gradient(loss, tensordict, log_prob)
    extra = loss.extra_outputs(tensordict, log_prob)
    return as_tensordict({"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, **extra})


class StackelbergUpdate:
    """Stackelberg gradients for a :class:`~torchrl_stac.offpolicy_losses.TwinQLoss`.

    ``update(batch)`` draws the noise once (a batch that already carries a draw keeps it),
    evaluates f_A and f_C on the same minibatch and draw, and sets ``.grad`` of the leader to its
    total derivative, of the follower to its own gradient and of ``log_alpha`` to ∇ loss_alpha.

    Args:
        loss: the two players' losses (SAC or TD3).
        leader: ``"actor"`` (θ leads; the critic best-responds) or ``"critic"`` (w leads; the
            actor's Hessian is inverted).
        solver: λ, the solve, its curvature fallback and non-finite policy, eigenvalues
            (:class:`~torchrl_stac.FollowerSolver`; default :meth:`FollowerSolver.safe`: λ from the
            conditioning, κ = 100, and the correction at most the partial gradient's norm). The
            Gauss-Newton fallback exists for the critic follower only.
        hessian: ``"exact"``, ``"gauss_newton"`` (critic follower only: (2/B) Σ_j J_jᵀJ_j) or
            ``"fisher"`` (actor follower of SAC only: the policy's Fisher information, the Hessian of
            the mean KL(π_θ̄ ‖ π_θ) at θ̄ = θ; positive semi-definite where ∇²_θ f_A is indefinite).
            Default ``None``: the leader's own (:func:`default_hessian`): ``"fisher"`` for SAC's
            critic leader, else ``"exact"``.
        correction_every: correct the leader's gradient on one update in ``n``; the others are
            plain updates (``corrected = 0`` in their diagnostics, and no ``regularization``: they
            solve nothing, so a per-batch mean of λ is over the corrected updates alone).
    """

    def __init__(
        self,
        loss: TwinQLoss,
        *,
        leader: Literal["actor", "critic"] = "actor",
        solver: FollowerSolver | None = None,
        hessian: Literal["exact", "gauss_newton", "fisher"] | None = None,
        correction_every: int = 1,
    ):
        solver = solver or FollowerSolver.safe()
        if leader not in ("actor", "critic"):
            raise ValueError(f"unknown leader {leader!r}: choose one of ('actor', 'critic').")
        if hessian is None:
            hessian = default_hessian(leader, stochastic_actor=hasattr(loss, "policy_normal"))
        if hessian not in ("exact", "gauss_newton", "fisher"):
            raise ValueError(f"unknown hessian {hessian!r}: choose one of ('exact', 'gauss_newton', 'fisher').")
        if (hessian == "gauss_newton" or solver.curvature_fallback) and leader == "critic":
            raise ValueError("the Gauss-Newton matrix exists for the critic's squared error only: use leader='actor'.")
        if hessian == "fisher" and (leader != "critic" or not hasattr(loss, "policy_normal")):
            raise ValueError(
                "hessian='fisher' is the curvature of a stochastic actor that follows: SAC, leader='critic'."
            )
        if correction_every < 1:
            raise ValueError(f"correction_every must be >= 1, got {correction_every}.")
        self.loss, self.leader, self.solver = loss, leader, solver
        self.hessian, self.correction_every = hessian, correction_every

    @property
    def num_updates(self) -> int:
        return self.solver.num_updates

    def players(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """(leader's parameters, follower's parameters)."""
        actor, critic = self.loss.actor_params, self.loss.critic_params
        return (actor, critic) if self.leader == "actor" else (critic, actor)

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Set every player's ``.grad`` for one update on ``tensordict``; returns diagnostics."""
        if self.loss.tensor_keys.noise not in tensordict.keys(True):
            self.loss.draw_noise(tensordict)  # one draw for both players (kept if the batch has one)
        if self.solver.num_updates % self.correction_every:
            self.solver.next_regularization()  # advances the schedule's update counter
            diagnostics = plain_gradients(self.loss, tensordict).select("loss_actor", "loss_qvalue")
            return diagnostics.update({"corrected": torch.zeros(())})
        leader_params, follower_params = self.players()
        f_actor, log_prob, f_critic = self.loss.player_losses(tensordict)
        f_leader, f_follower = (f_actor, f_critic) if self.leader == "actor" else (f_critic, f_actor)
        gauss_newton = self._gauss_newton(tensordict) if self.leader == "actor" else None
        curvature = {"exact": None, "gauss_newton": gauss_newton}
        if self.hessian == "fisher":
            curvature["fisher"] = fisher_hvp(self.loss.policy_normal(tensordict), follower_params)
        step = total_gradient(
            f_leader,
            f_follower,
            leader_params,
            follower_params,
            self.solver,
            hessian=curvature[self.hessian],
            gauss_newton=gauss_newton if self.hessian == "exact" else None,
        )
        for param, grad in zip(leader_params, unflatten(step.total, leader_params), strict=True):
            param.grad = grad.detach().clone()
        for param, grad in zip(follower_params, step.follower_grad, strict=True):
            param.grad = grad.clone()
        _set_alpha_gradient(self.loss, tensordict, log_prob)
        return self._diagnostics(f_actor, f_critic, step)

    def _gauss_newton(self, tensordict: TensorDictBase) -> MatVec:
        """``v ↦ (2/B) Σ_j J_jᵀ J_j v`` for the critic's squared error, J_j = ∂Q_wj(s, a)/∂w; its
        graph is built at the first product (a fallback that is never needed costs nothing)."""
        params = self.loss.critic_params
        graph = {}

        def matvec(v: torch.Tensor) -> torch.Tensor:
            if not graph:
                q = self.loss.q_values(tensordict, tensordict.get(self.loss.tensor_keys.action))  # [J, *B]
                dummy = torch.zeros_like(q, requires_grad=True)
                vjp = torch.autograd.grad(q, params, dummy, create_graph=True, materialize_grads=True)
                graph.update(q=q, dummy=dummy, vjp=vjp)
            q, dummy = graph["q"], graph["dummy"]
            jv = torch.autograd.grad(graph["vjp"], dummy, unflatten(v, params), retain_graph=True)[0]
            products = torch.autograd.grad(q, params, jv, retain_graph=True, materialize_grads=True)
            return 2.0 / q[0].numel() * flatten(products)

        return matvec

    @staticmethod
    def _diagnostics(f_actor: torch.Tensor, f_critic: torch.Tensor, step: TotalGradient) -> TensorDictBase:
        values = {"loss_actor": f_actor.detach(), "loss_qvalue": f_critic.detach(), "corrected": 1.0}
        values.update(gradient_diagnostics(step.partial, step.correction, step.skipped, step.bounded))
        values.update(
            solve_diagnostics(step.regularization, step.result, step.fell_back, step.skipped, step.eigenvalues)
        )
        return as_tensordict(values)

    def state_dict(self) -> dict:
        """The solver's state: the update counter (drives λ schedules) and the CG warm start."""
        return self.solver.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.solver.load_state_dict(state)
