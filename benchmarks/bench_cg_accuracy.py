"""How exact is the off-policy recipe's truncated CG solve? Measured on a run's own checkpoint.

    python benchmarks/bench_cg_accuracy.py RUN_DIR [--batches 20] [--caps 1,3,10,30]

Loads the newest checkpoint of a Stackelberg run of ``recipes/stsac_mujoco.py`` (its networks,
replay buffer and follower-solver state: λ's eigenvalue estimate and CG's warm start), draws
minibatches from its replay buffer and, for each, computes the leader's correction
c = total − partial with CG capped at each of ``caps`` iterations (from the checkpoint's warm start,
as in training) and converged (CG to a relative residual of 1e-6, at most 3000 iterations, and
refused above 1e-4), on the same minibatch, noise draw and λ. Per cap, medians over the batches:
cos(c, c*), ‖c‖ / ‖c*‖, CG's relative residual ‖(H + λI)x − b‖ / ‖b‖, and cos(total, total*), with
‖c*‖ / ‖partial‖ for scale; the share of batches where CG met non-positive curvature and re-solved
with Gauss-Newton (the actor leader's fallback; the converged solve's share too, since its matrix
then differs).
Prints a table; writes ``benchmarks/results/cg_accuracy/<run>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cg_accuracy"
sys.path.insert(0, str(ROOT / "recipes"))

from torchrl.data import LazyTensorStorage, ReplayBuffer  # noqa: E402

from recipe_checkpoints import CompactReplay, list_checkpoints, read_checkpoint  # noqa: E402
from recipe_envs import make_env  # noqa: E402
from recipe_losses import make_offpolicy  # noqa: E402
from recipe_models import make_offpolicy_models  # noqa: E402
from recipe_schema import StsacConfig  # noqa: E402
from torchrl_stac import StackelbergUpdate, plain_gradients  # noqa: E402

CONVERGED_ITERATIONS = 3000  # CG stops earlier, at its tolerance (1e-6)
CONVERGED_RESIDUAL = 1e-4  # the reference solve must reach this relative residual


def load_run(run_dir: Path) -> tuple[StackelbergUpdate, ReplayBuffer, dict]:
    """The run's Stackelberg update (networks and solver state restored) and its replay buffer."""
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if not checkpoints:
        raise SystemExit(f"error: no checkpoint in {run_dir / 'checkpoints'}")
    state = read_checkpoint(checkpoints[0])
    cfg = OmegaConf.merge(OmegaConf.structured(StsacConfig), state["config"])  # keys added since: defaults
    if not cfg.algo.startswith("st"):
        raise SystemExit(f"error: {run_dir} trained algo={cfg.algo}, which solves nothing; pick a Stackelberg run")
    cfg.device = "cpu"
    env = make_env(cfg.env, 1, cfg.device)
    actor, _, critics = make_offpolicy_models(cfg, env)
    loss, update = make_offpolicy(cfg, actor, critics, env.action_spec_unbatched)
    loss.load_state_dict(state["losses"])
    update.load_state_dict(state["stackelberg"])
    replay = ReplayBuffer(storage=LazyTensorStorage(cfg.buffer_size), batch_size=cfg.batch_size)
    CompactReplay(replay).load_state_dict(state["replay_buffer"])
    about = {"run": run_dir.name, "checkpoint": checkpoints[0].name, "frames": state["counters"]["frames"]}
    about |= {key: cfg[key] for key in ("env", "algo", "leader", "hessian", "regularization_decay", "cg_iterations")}
    return update, replay, about


def leader_gradients(update: StackelbergUpdate, batch, cap: int | None) -> tuple[torch.Tensor, dict]:
    """The leader's flat gradient on ``batch`` from a copy of ``update`` (its solver state untouched):
    plain (``cap=None``) or total with CG capped at ``cap``; with the solve's diagnostics."""
    update = copy.deepcopy(update)
    if cap is None:
        plain_gradients(update.loss, batch.clone())
        diagnostics = {}
    else:
        update.correction_every, update.solver.cg_iterations = 1, cap
        diagnostics = {key: float(value) for key, value in update(batch.clone()).items()}
    return torch.cat([param.grad.flatten() for param in update.players()[0]]), diagnostics


def measure(update: StackelbergUpdate, replay: ReplayBuffer, caps: list[int], batches: int) -> dict[int, dict]:
    """Per cap, the medians over ``batches`` minibatches (see the module's docstring)."""
    cosine = torch.nn.functional.cosine_similarity
    per_cap = {cap: [] for cap in caps}
    for _ in range(batches):
        batch = replay.sample()
        update.loss.draw_noise(batch)  # one draw for every solve of this batch
        partial, _ = leader_gradients(update, batch, None)
        total_star, converged = leader_gradients(update, batch, CONVERGED_ITERATIONS)
        if converged["relative_residual"] > CONVERGED_RESIDUAL:
            raise SystemExit(f"error: CG did not converge in {CONVERGED_ITERATIONS} iterations: {converged}")
        correction_star = total_star - partial
        for cap in caps:
            total, diagnostics = leader_gradients(update, batch, cap)
            correction = total - partial
            per_cap[cap].append(
                {
                    "cosine_correction": cosine(correction, correction_star, 0).item(),
                    "norm_ratio": (correction.norm() / correction_star.norm()).item(),
                    "relative_residual": diagnostics["relative_residual"],
                    "cosine_total": cosine(total, total_star, 0).item(),
                    "nonpositive_curvature": diagnostics["nonpositive_curvature"],
                    "gauss_newton_fallback": diagnostics.get("gauss_newton_fallback", 0.0),
                    "converged_fallback": converged.get("gauss_newton_fallback", 0.0),
                    "converged_correction_ratio": (correction_star.norm() / partial.norm()).item(),
                    "converged_iterations": converged["solver_iterations"],
                    "converged_residual": converged["relative_residual"],
                    "regularization": converged["regularization"],
                }
            )
    shares = ("nonpositive_curvature", "gauss_newton_fallback", "converged_fallback")  # 0/1 flags: their mean
    return {
        cap: {
            key: (statistics.mean if key in shares else statistics.median)(row[key] for row in rows) for key in rows[0]
        }
        for cap, rows in per_cap.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory of recipes/stsac_mujoco.py (algo=st*)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--caps", default="1,3,10,30", help="CG iteration caps, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="default: results/cg_accuracy/<run>.json")
    args = parser.parse_args()
    caps = [int(cap) for cap in args.caps.split(",")]
    if args.batches < 1 or min(caps) < 1:
        raise SystemExit("error: --batches and every cap must be >= 1")
    torch.manual_seed(args.seed)
    update, replay, about = load_run(args.run_dir)
    result = measure(update, replay, caps, args.batches)
    print(f"{about['run']} ({about['checkpoint']}): {about['algo']} leader={about['leader']} {about['hessian']}")
    print(
        "| CG cap | cos(c, c*) | ‖c‖/‖c*‖ | relative residual | cos(total, total*) | ‖c*‖/‖partial‖ | λ "
        "| non-positive curvature | Gauss-Newton re-solve (converged) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cap, row in result.items():
        print(
            f"| {cap} | {row['cosine_correction']:.3f} | {row['norm_ratio']:.2f} | {row['relative_residual']:.3f} "
            f"| {row['cosine_total']:.5f} | {row['converged_correction_ratio']:.3f} | {row['regularization']:.3g} "
            f"| {row['nonpositive_curvature']:.2f} "
            f"| {row['gauss_newton_fallback']:.2f} ({row['converged_fallback']:.2f}) |"
        )
    output = args.output or RESULTS / f"{about['run']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {**about, "batches": args.batches, "seed": args.seed, "medians": {str(c): r for c, r in result.items()}}
    output.write_text(json.dumps(record, indent=1))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
