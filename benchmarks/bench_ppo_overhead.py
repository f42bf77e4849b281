"""What does the Stackelberg correction cost inside PPO? Plain PPO and Stackelberg-PPO, same run.

    python benchmarks/bench_ppo_overhead.py [--env Hopper-v4] [--frames 16384] [--rounds 3] [--output NAME]
                                            [overrides ...]

Each round trains the ``recipes/stppo_mujoco.py`` with ``algo=ac`` (plain PPO) and ``algo=stac``
(one Hessian solve per batch, a correction per minibatch) for ``--frames`` frames at the recipe's
PPO defaults, back to back, and compares their seconds per frame (all phases: collection,
advantages, updates, correction; evaluation and checkpoints excluded). Prints per round and the
median ``Stackelberg-PPO / PPO wall time: X`` (target ≤ 1.3), and the same cost measured inside the
Stackelberg-PPO runs alone (all phases ÷ all phases but the correction), which other load on a
shared machine disturbs less; writes every round to ``benchmarks/results/<--output>`` (default
``ppo_overhead.json``, the recipe's defaults; the condition-λ variant's is
``ppo_overhead_condition.json``, run with ``threads=1 regularization_decay=condition condition_number=10
correction_max_ratio=1``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "recipes"))


def seconds_per_frame(env_id: str, algo: str, frames: int, overrides: list[str]) -> dict:
    from recipe_schema import load_config
    from stppo_mujoco import train

    budget = [
        f"total_frames={frames}",
        "logger=none",
        f"eval_interval={10 * frames}",
        f"checkpoint_interval={10 * frames}",
    ]
    cfg = load_config("config_stppo", [f"env={env_id}", f"algo={algo}", *budget, *overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(cfg, Path(run_dir))
    phases = summary["phase_seconds"]
    return {"seconds_per_frame": sum(phases.values()) / summary["frames"], "phase_seconds": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--frames", type=int, default=16_384, help="frames per measurement (8 PPO batches)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="ppo_overhead.json", help="file name under benchmarks/results/")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. threads=1")
    args = parser.parse_args()
    rounds = []
    for index in range(args.rounds):
        plain = seconds_per_frame(args.env, "ac", args.frames, args.overrides)
        stackelberg = seconds_per_frame(args.env, "stac", args.frames, args.overrides)
        ratio = stackelberg["seconds_per_frame"] / plain["seconds_per_frame"]
        rounds.append({"ppo": plain, "stackelberg_ppo": stackelberg, "ratio": ratio})
        print(f"round {index + 1}/{args.rounds}: Stackelberg-PPO / PPO {ratio:.3f}", flush=True)
    median = statistics.median(r["ratio"] for r in rounds)
    for name in ("ppo", "stackelberg_ppo"):
        phases = {
            k: statistics.median(r[name]["phase_seconds"].get(k, 0.0) for r in rounds)
            for k in rounds[0]["stackelberg_ppo"]["phase_seconds"]
        }
        print(
            f"{name} phases (median seconds over {args.frames} frames): "
            + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
        )
    within = statistics.median(
        sum(r["stackelberg_ppo"]["phase_seconds"].values())
        / (sum(r["stackelberg_ppo"]["phase_seconds"].values()) - r["stackelberg_ppo"]["phase_seconds"]["implicit"])
        for r in rounds
    )
    print(f"Stackelberg-PPO / PPO wall time: {median:.3f} (target <= 1.3)")
    print(f"within the Stackelberg-PPO runs, all phases / all but the correction: {within:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "env": args.env,
        "frames": args.frames,
        "overrides": args.overrides,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "median_ratio": median,
        "median_ratio_within_run": within,
        "rounds": rounds,
    }
    (RESULTS / args.output).write_text(json.dumps(record, indent=2))
    print(f"wrote {RESULTS / args.output}")


if __name__ == "__main__":
    main()
