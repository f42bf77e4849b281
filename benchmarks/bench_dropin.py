"""The hook dropped into a plain TorchRL loop, as a new user would: is it as reliable as AC?

    python benchmarks/bench_dropin.py run --variants ac,lambda50,default --seeds 0-4
    python benchmarks/bench_dropin.py aggregate

The loop is the README's drop-in snippet on a continuous task (InvertedPendulum-v4 by default): a
TanhNormal actor and a V critic (64×64 tanh MLPs), Adam 3e-3 (actor) and 1e-3 (critic), GAE(0.95) for
the actor, Monte-Carlo returns for the critic, batches of 200 frames (the snippet's), ``critic_steps``
critic steps per batch, then the actor's step with or without ``ImplicitGradientHook``. The train env
is seeded with ``seed``, the evaluation env with ``seed + 1000``; every ``eval_every`` frames one
deterministic episode is run.

Variants (the hook's solver): ``ac`` (no hook), ``lambda50`` (a fixed λ = 50, no bound: what a user
picked before safe defaults existed), the two safeguards alone (``condition``: λ from κ = 100;
``bound``: λ = 50 and ‖correction‖ <= ‖partial‖) and together (``condition_bound``; ρ = 0.5:
``condition_bound05``), and ``default`` (no solver given: the hook's own, ``FollowerSolver.safe()``,
today the same as ``condition_bound``).
``run`` writes one JSON per finished run under ``benchmarks/results/dropin/`` (a killed run starts
again; each takes minutes); ``aggregate`` prints and writes the table (runs that reach the task's
maximum and when, collapses after reaching it, the share of evaluations at it, the final return and AUC
with rliable's 95% CIs and the AUC verdict against `ac`), ``dropin_summary.json`` and ``dropin.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchrl.collectors import Collector
from torchrl.envs import DoubleToFloat, ExplorationType, GymEnv, StepCounter, TransformedEnv, set_exploration_type

from bench_sample_efficiency import parse_seeds
from bench_stats import compare, summarize
from torchrl_stac import CriticLoss, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dropin"
sys.path.insert(0, str(ROOT / "recipes"))

from recipe_models import make_models  # noqa: E402

VARIANTS: dict[str, Callable[[], FollowerSolver | None] | None] = {
    "ac": None,
    "lambda50": lambda: FollowerSolver(50.0),
    "default": lambda: None,  # the hook's own default (FollowerSolver.safe())
    "condition": lambda: FollowerSolver(condition_number=100.0),
    "bound": lambda: FollowerSolver(50.0, correction_max_ratio=1.0),
    "condition_bound": lambda: FollowerSolver(condition_number=100.0, correction_max_ratio=1.0),
    "condition_bound05": lambda: FollowerSolver(condition_number=100.0, correction_max_ratio=0.5),
}


def make_env(env_id: str, seed: int) -> TransformedEnv:
    env = TransformedEnv(GymEnv(env_id), DoubleToFloat())
    env.append_transform(StepCounter())
    env.set_seed(seed)
    return env


def dropin_loop(
    variant: str,
    seed: int,
    *,
    env_id: str = "InvertedPendulum-v4",
    total_frames: int = 150_000,
    frames_per_batch: int = 200,
    critic_steps: int = 5,
    eval_every: int = 5000,
) -> dict:
    """One run of the drop-in loop: ``{"eval_curve": [[frames, return], ...], "correction_ratio": [...],
    "solver": solver_settings(...)}``."""
    torch.manual_seed(seed)
    env, eval_env = make_env(env_id, seed), make_env(env_id, seed + 1000)
    actor, critic = make_models(env, [64, 64], "cpu")  # the paper-scale tanh MLPs, TanhNormal actor
    critic_loss = CriticLoss(critic).make_value_estimator(gamma=0.99)
    actor_loss = StackelbergActorLoss(actor, critic, normalize_advantage=True)
    actor_loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    actor_loss.set_keys(value_target="gae_target")
    make_solver = VARIANTS[variant]
    hook = ImplicitGradientHook(actor_loss, critic_loss, solver=make_solver()) if make_solver else None
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)

    curve, ratios, frames = [], [], 0
    collector = Collector(env, actor, frames_per_batch=frames_per_batch, total_frames=total_frames)
    for batch in collector:
        with torch.no_grad():
            critic_loss.value_estimator(batch)
            actor_loss.value_estimator(batch)
        for _ in range(critic_steps):
            critic_opt.zero_grad()
            critic_loss(batch)["loss_critic"].backward()
            critic_opt.step()
        actor_opt.zero_grad()
        actor_loss(batch)["loss_objective"].backward()
        if hook is not None:
            ratios.append(float(hook(batch)["correction_ratio"]))
        actor_opt.step()
        frames += batch.numel()
        if frames % eval_every == 0:
            with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
                episode = eval_env.rollout(1000, actor)
            curve.append([frames, float(episode["next", "reward"].sum())])
    collector.shutdown()
    env.close()
    eval_env.close()
    return {"eval_curve": curve, "correction_ratio": ratios, "solver": solver_settings(hook.solver if hook else None)}


def solver_settings(solver: FollowerSolver | None) -> dict | None:
    """What a result file records of its variant's solver (None: plain AC, no correction)."""
    if solver is None:
        return None
    return {
        "regularization_decay": "condition" if solver.condition_number is not None else "fixed",
        "regularization": solver.regularization
        if isinstance(solver.regularization, int | float)
        else repr(solver.regularization),
        "condition_number": solver.condition_number,
        "eigenvalue_every": solver.eigenvalue_every,
        "correction_max_ratio": solver.correction_max_ratio,
        "cg_iterations": solver.cg_iterations,
    }


def result_path(variant: str, seed: int) -> Path:
    return RESULTS / f"{variant}_seed{seed}.json"


def command_run(args) -> None:
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        sys.exit(f"error: unknown variants {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(args.seeds):
        for variant in args.variants.split(","):
            path = result_path(variant, seed)
            if path.exists():
                continue
            start = time.perf_counter()
            record = dropin_loop(
                variant, seed, env_id=args.env, total_frames=args.frames, frames_per_batch=args.frames_per_batch
            )
            record.update(
                variant=variant,
                seed=seed,
                env=args.env,
                frames=args.frames,
                frames_per_batch=args.frames_per_batch,
                wall_seconds=time.perf_counter() - start,
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(path)
            print(f"{variant} seed {seed}: last evaluation {record['eval_curve'][-1][1]:.0f}", flush=True)


def solved_at(curve: list[list[float]], target: float) -> int | None:
    """The first frame count whose evaluation reached ``target``, or None."""
    return next((int(frames) for frames, value in curve if value >= target), None)


def variant_summary(runs: list[dict], target: float) -> dict:
    """One variant's reliability over its runs: how many reach ``target`` (and when), how many end below
    half of it after reaching it, the share of evaluations at ``target``, and the final return and AUC
    (mean evaluation over training) with rliable's 95% CIs (``bench_stats.summarize``)."""
    reached = [solved_at(r["eval_curve"], target) for r in runs]
    ratios = [x for r in runs for x in r["correction_ratio"]]
    at_target = [sum(value >= target for _, value in r["eval_curve"]) / len(r["eval_curve"]) for r in runs]
    return {
        **summarize(runs),
        "reached": sum(x is not None for x in reached),
        "frames_to_reach": reached,
        "collapsed_after_reaching": sum(
            x is not None and r["eval_curve"][-1][1] < target / 2 for x, r in zip(reached, runs, strict=True)
        ),
        "share_at_target": float(np.mean(at_target)),
        "correction_ratio_median": float(np.median(ratios)) if ratios else None,
        "correction_ratio_max": max(ratios) if ratios else None,
    }


def command_aggregate(args) -> None:
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not records:
        sys.exit(f"error: no result files under {RESULTS}; run `bench_dropin.py run` first")
    protocols = {(r["env"], r["frames"], r.get("frames_per_batch")) for r in records}
    if len(protocols) > 1:  # runs of different budgets or batch sizes must not pool
        sys.exit(f"error: {RESULTS} mixes protocols (env, frames, frames per batch) {sorted(protocols, key=str)}")
    summary = {
        variant: variant_summary([r for r in records if r["variant"] == variant], args.target)
        for variant in VARIANTS
        if any(r["variant"] == variant for r in records)
    }
    lines = [
        f"| variant | runs | reached {args.target:.0f} (frames) | collapsed after reaching | share of evaluations "
        f"at {args.target:.0f} | final (mean [95% CI]) | AUC (mean [95% CI]) | AUC vs ac | correction ratio "
        "(median, max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, s in summary.items():
        ratio = (
            f"{s['correction_ratio_median']:.2f}, {s['correction_ratio_max']:.2f}"
            if s["correction_ratio_median"] is not None
            else "–"
        )
        reached = ", ".join(str(x) if x is not None else "–" for x in s["frames_to_reach"])
        versus = compare(s, summary["ac"], "auc") if "ac" in summary and variant != "ac" else "–"
        lines.append(
            f"| {variant} | {s['seeds']} | {s['reached']} ({reached}) | {s['collapsed_after_reaching']} | "
            f"{s['share_at_target']:.2f} | {s['final_mean']:.0f} [{s['final_ci'][0]:.0f}, {s['final_ci'][1]:.0f}] | "
            f"{s['auc_mean']:.0f} [{s['auc_ci'][0]:.0f}, {s['auc_ci'][1]:.0f}] | {versus} | {ratio} |"
        )
    print("\n".join(lines))
    out = ROOT / "benchmarks" / "results"
    (out / "dropin_summary.json").write_text(json.dumps(summary, indent=1))
    (out / "dropin.md").write_text("\n".join(lines) + "\n")
    plot(records, out / "dropin.png")
    print(f"wrote {out / 'dropin_summary.json'}, dropin.md, dropin.png")


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants), 3.5), sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for record in (r for r in records if r["variant"] == variant):
            frames, values = zip(*record["eval_curve"], strict=True)
            ax.plot(frames, values, label=f"seed {record['seed']}")
        ax.set_title(variant)
        ax.set_xlabel("frames")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("deterministic return")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the missing runs")
    run.add_argument("--variants", default=",".join(VARIANTS))
    run.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2")
    run.add_argument("--env", default="InvertedPendulum-v4")
    run.add_argument("--frames", type=int, default=150_000)
    run.add_argument("--frames-per-batch", type=int, default=200, help="frames per actor step (the snippet's 200)")
    aggregate = sub.add_parser("aggregate", help="table, JSON and PNG from the result files")
    aggregate.add_argument("--target", type=float, default=1000.0, help="the task's maximum return")
    args = parser.parse_args()
    command_run(args) if args.command == "run" else command_aggregate(args)


if __name__ == "__main__":
    main()
