"""Does envpool's build of a task behave like Gymnasium's? The same policies' returns on both.

    python benchmarks/envpool_check.py [--env Hopper-v4] [--episodes 20] [--checkpoint RUN_DIR_OR_FILE]

Policies: the recipe's actor at its seeded initialisation (untrained: short episodes, how the
hopper falls) and, with ``--checkpoint``, a trained run's actor with its observation statistics
(long episodes: the locomotion dynamics). Each runs ``--episodes`` deterministic episodes on each
backend (``recipes/recipe_envs.py``, ``evaluate``; episode i seeded 1000 + i). The two simulators draw their
initial-state noise from different generators, so episodes are compared as samples: the difference
of the mean returns in standard errors. Writes ``benchmarks/results/envpool_check.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from evaluate import saved_actor, saved_recipe  # noqa: E402

from bench_report import replace_section  # noqa: E402
from recipe_checkpoints import load_checkpoint  # noqa: E402
from recipe_envs import check_env, evaluate, frozen_observation_norm, make_env  # noqa: E402
from recipe_models import make_models  # noqa: E402

BACKENDS = ("gymnasium", "envpool")


def policies(env_id: str, checkpoint: str | None):
    """(name, actor, saved observation statistics or None) for each policy to compare."""
    torch.manual_seed(0)
    actor, _ = make_models(make_env(env_id, 1), [64, 64], "cpu")
    yield "untrained actor (seed 0)", actor, None
    if checkpoint:
        state, path = load_checkpoint(checkpoint, "--checkpoint")
        run = state["config"]
        actor = saved_actor(state, make_env(env_id, 1), "cpu")
        frames = state["counters"]["frames"]
        yield (
            f"{saved_recipe(state)} {run['algo']} after {frames} frames ({path.name})",
            actor,
            state.get("observation_norm"),
        )


def describe(returns: list[float]) -> dict:
    std = statistics.stdev(returns) if len(returns) > 1 else 0.0
    return {
        "mean": statistics.mean(returns),
        "median": statistics.median(returns),
        "std": std,
        "standard_error": std / math.sqrt(len(returns)),
        "returns": returns,
    }


def short_episodes(returns: list[float], reference_median: float) -> int:
    """Episodes that ended below half the reference median return (e.g. the hopper fell early)."""
    return sum(value < reference_median / 2 for value in returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--checkpoint", default=None, help="a recipe run directory or checkpoint file")
    args = parser.parse_args()
    for backend in BACKENDS:
        check_env(args.env, backend)
    torch.set_num_threads(1)
    record = {"env": args.env, "episodes": args.episodes, "checkpoint": args.checkpoint, "policies": []}
    print(f"{'policy':<58}{'backend':<11}{'mean return':>12}{'± s.e.':>9}")
    for name, actor, saved_norm in policies(args.env, args.checkpoint):
        results = {}
        for backend in BACKENDS:
            norm = frozen_observation_norm(saved_norm) if saved_norm else False
            env = make_env(args.env, 1, "cpu", norm, backend)
            results[backend] = describe(evaluate(actor, env, args.episodes, seed=1000))
            env.close()
            print(f"{name:<58}{backend:<11}{results[backend]['mean']:>12.1f}{results[backend]['standard_error']:>9.1f}")
        gym, pool = results["gymnasium"], results["envpool"]
        gap = (pool["mean"] - gym["mean"]) / max(math.hypot(pool["standard_error"], gym["standard_error"]), 1e-12)
        for result in results.values():
            result["short_episodes"] = short_episodes(result["returns"], gym["median"])
        print(
            f"  envpool − gymnasium: {pool['mean'] - gym['mean']:+.1f} ({gap:+.2f} standard errors); medians "
            f"{pool['median']:.1f} vs {gym['median']:.1f}; episodes below half the gymnasium median: "
            f"{pool['short_episodes']} vs {gym['short_episodes']} of {args.episodes}"
        )
        record["policies"].append({"policy": name, **results, "difference_in_standard_errors": gap})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "envpool_check.json").write_text(json.dumps(record, indent=1))
    replace_section(ROOT / "docs" / "recipes.md", "envpool", readme_text(record))
    print(f"wrote {RESULTS / 'envpool_check.json'} and the envpool lines of docs/recipes.md")


def readme_text(record: dict) -> str:
    """The docs' account of the check, from the record (regenerated with every run)."""
    lines = [
        f"Same policies on both simulators ({record['env']}, {record['episodes']} deterministic episodes each,",
        "`python benchmarks/envpool_check.py`, `benchmarks/results/envpool_check.json`):",
        "",
    ]
    for policy in record["policies"]:
        gym, pool = policy["gymnasium"], policy["envpool"]
        lines.append(
            f"- {policy['policy']}: mean return {pool['mean']:.1f} (envpool) vs {gym['mean']:.1f} (gymnasium), "
            f"{policy['difference_in_standard_errors']:+.2f} standard errors; medians {pool['median']:.1f} vs "
            f"{gym['median']:.1f}; episodes below half the gymnasium median: {pool['short_episodes']} vs "
            f"{gym['short_episodes']}."
        )
    lines += [
        "",
        "envpool ships its own MuJoCo build and draws the initial-state noise from its own generator, so",
        "trajectories are not step-for-step identical; the comparison is between samples of episodes.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
