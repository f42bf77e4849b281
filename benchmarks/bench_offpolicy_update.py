"""What does a Stackelberg SAC update cost next to a SAC update? Both timed in the same run.

    python benchmarks/bench_offpolicy_update.py [--updates 10] [--rounds 3] [--threads 0]

At the recipe's default sizes (256×256 ReLU actor and twin critics, batch 256, Hopper's 11
observations and 3 actions), one update = both players' gradients, three Adam steps and the
Polyak target update. Variants are timed in interleaved rounds (medians reported): plain SAC,
the recipe's default Stackelberg update, and one change at a time (CG iterations, no warm start,
Gauss-Newton curvature, a correction every n updates). Prints a table and the line
``ST/plain update ratio: X`` (default settings); writes
``benchmarks/results/bench_offpolicy_update.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tensordict import TensorDict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "recipes"))

OBS, ACT, BATCH = 11, 3, 256
WARMUP = 10  # untimed updates; a multiple of every correction_every below, so each window starts on a correction
DEFAULT = {"max_iter": 10, "hessian": "exact", "curvature_fallback": "gauss_newton", "warm_start": True}
VARIANTS = {
    "SAC (plain)": None,
    "ST default (CG 10, exact + GN fallback)": {},
    "ST CG 3": {"max_iter": 3},
    "ST CG 1": {"max_iter": 1},
    "ST no warm start": {"warm_start": False},
    "ST Gauss-Newton": {"hessian": "gauss_newton", "curvature_fallback": None},
    "ST Gauss-Newton, CG 3": {"hessian": "gauss_newton", "curvature_fallback": None, "max_iter": 3},
    "ST every 2 updates": {"correction_every": 2},
    "ST every 5 updates": {"correction_every": 5},
    "ST every 10 updates": {"correction_every": 10},
}


def make_players(seed: int = 0):
    from envs import make_env
    from models import make_sac_models
    from objectives import make_optimizer
    from torchrl_stac import StackelbergSACLoss

    torch.manual_seed(seed)
    actor, critics = make_sac_models(make_env("Hopper-v4"), [256, 256], "cpu")
    loss = StackelbergSACLoss(actor, critics, gamma=0.99)
    optimizers = [make_optimizer("adam", params, 3e-4) for params in (loss.actor_params, loss.critic_params)]
    optimizers.append(make_optimizer("adam", [loss.log_alpha], 3e-4))
    return loss, optimizers


def minibatch(generator: torch.Generator) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.randn(BATCH, OBS, generator=generator),
            "action": torch.rand(BATCH, ACT, generator=generator) * 2 - 1,
            ("next", "observation"): torch.randn(BATCH, OBS, generator=generator),
            ("next", "reward"): torch.randn(BATCH, 1, generator=generator),
            ("next", "terminated"): torch.rand(BATCH, 1, generator=generator) < 0.01,
            ("next", "done"): torch.zeros(BATCH, 1, dtype=torch.bool),
        },
        batch_size=[BATCH],
    )


def seconds_per_update(options: dict | None, updates: int) -> float:
    from torchrl_stac import StackelbergUpdate, plain_gradients

    loss, optimizers = make_players()
    step = (
        (lambda td: plain_gradients(loss, td))
        if options is None
        else StackelbergUpdate(loss, regularization=1.0, on_nonfinite="skip", **{**DEFAULT, **options})
    )
    generator = torch.Generator().manual_seed(1)
    batches = [minibatch(generator) for _ in range(WARMUP + updates)]
    times = []
    for index, td in enumerate(batches):
        start = time.perf_counter()
        step(td)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss.update_targets(0.005)
        if index >= WARMUP:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=20, help="timed updates per variant and round (multiple of 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.updates % 10:
        parser.error("--updates must be a multiple of 10 (every variant's correction period divides it)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for index in range(args.rounds):
        for name, options in VARIANTS.items():
            rounds[name].append(seconds_per_update(options, args.updates))
        print(f"round {index + 1}/{args.rounds} done", flush=True)
    plain = statistics.median(rounds["SAC (plain)"])
    rows = ["| variant | ms per update (median) | ÷ SAC |", "| --- | --- | --- |"]
    for name, values in rounds.items():
        median = statistics.median(values)
        rows.append(f"| {name} | {1000 * median:.1f} | {median / plain:.2f} |")
    table = "\n".join(rows)
    print(table)
    ratio = statistics.median(rounds["ST default (CG 10, exact + GN fallback)"]) / plain
    print(f"ST/plain update ratio: {ratio:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "sizes": {"observation": OBS, "action": ACT, "batch": BATCH, "cells": [256, 256]},
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "updates_per_round": args.updates,
        "seconds_per_update": rounds,
        "ratio_default": ratio,
    }
    (RESULTS / "bench_offpolicy_update.json").write_text(json.dumps(record, indent=1))
    (RESULTS / "bench_offpolicy_update.md").write_text(table + f"\n\nST/plain update ratio: {ratio:.2f}\n")
    print(f"wrote {RESULTS / 'bench_offpolicy_update.json'} and .md")


if __name__ == "__main__":
    main()
