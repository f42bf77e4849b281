"""What does a Stackelberg update cost next to its plain base (SAC, TD3, DDPG)? All timed in one run.

    python benchmarks/bench_offpolicy_update.py [--updates 10] [--rounds 3] [--threads 0]

At the recipe's default sizes (256×256 ReLU actor and twin critics, batch 256, Hopper's 11
observations and 3 actions), one update = both players' gradients, three Adam steps and the
Polyak target update. Variants are timed in interleaved rounds (medians reported): plain SAC,
the Stackelberg update at the recipe's defaults (read from its schema), and one change at a time
(the critic leading, CG iterations, no warm start, Gauss-Newton curvature, the correction period),
and TD3 and DDPG with their Stackelberg twins at the recipe's defaults, each against its own base.
Prints a table and the line ``ST/plain update ratio: X`` (default settings); writes
``benchmarks/results/bench_offpolicy_update.{json,md}`` and the table into ``docs/recipes.md``.
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

from bench_report import replace_section  # noqa: E402

OBS, ACT, BATCH = 11, 3, 256
PERIODS = (1, 2, 4, 8)  # correction periods timed; warm-up and timed windows are multiples of all of them
WARMUP = 8  # untimed updates, so each timed window starts on a correction


def recipe_default() -> dict:
    """The Stackelberg update's options at ``recipes/stsac_mujoco.py``'s defaults (its schema)."""
    from recipe_schema import StsacConfig, offpolicy_curvature

    cfg = StsacConfig()
    return {
        "leader": cfg.leader,
        "regularization": cfg.regularization,
        "cg_iterations": cfg.cg_iterations,
        "hessian": offpolicy_curvature(cfg)[0],
        "curvature_fallback": cfg.curvature_fallback,
        "correction_every": cfg.correction_every,
        "warm_start": True,
    }


DEFAULT = recipe_default()
DEFAULT_NAME = (
    f"ST default (leader {DEFAULT['leader']}, CG {DEFAULT['cg_iterations']}, every {DEFAULT['correction_every']}, "
    f"{DEFAULT['hessian']}{' + GN fallback' if DEFAULT['curvature_fallback'] else ''})"
)
CRITIC_LEADS_NAME = "ST leader critic (exact, no fallback)"  # leader=critic hessian=exact (the earlier default)
TD3_DEFAULT_NAME = "ST TD3 (recipe default, actor leads)"  # the recipe's algo=sttd3
ACTOR_CONDITION_NAME = "ST condition-λ κ=100 (Lanczos 10, every 10 corrections)"  # regularization_decay=condition
CRITIC_FISHER_NAME = "ST leader critic, Fisher + condition-λ κ=100"  # the recipe's default with leader=critic
ACTOR_GAUSS_NEWTON_NAME = "ST Gauss-Newton"  # hessian=gauss_newton: the critics' PSD curvature, no fallback needed
VARIANTS = {  # one change at a time from the recipe's default
    "SAC (plain)": None,
    DEFAULT_NAME: {},
    CRITIC_LEADS_NAME: {"leader": "critic", "curvature_fallback": None},
    "ST every update": {"correction_every": 1},
    "ST every update, CG 10 (the first default)": {"correction_every": 1, "cg_iterations": 10},
    "ST every 2 updates": {"correction_every": 2},
    "ST every 8 updates": {"correction_every": 8},
    "ST CG 1": {"cg_iterations": 1},
    "ST CG 10": {"cg_iterations": 10},
    "ST no warm start": {"warm_start": False},
    ACTOR_GAUSS_NEWTON_NAME: {"hessian": "gauss_newton", "curvature_fallback": None},
    ACTOR_CONDITION_NAME: {"condition_number": 100.0, "eigenvalue_every": 10},
    "ST condition-λ κ=100 (Lanczos 10, every correction)": {"condition_number": 100.0, "eigenvalue_every": 1},
    CRITIC_FISHER_NAME: {
        "leader": "critic",
        "curvature_fallback": None,
        "hessian": "fisher",
        "condition_number": 100.0,
        "eigenvalue_every": 10,
    },
    "ST bound ρ = 1": {"correction_max_ratio": 1.0},
    "TD3 (plain)": {"base": "td3", "plain": True},
    TD3_DEFAULT_NAME: {"base": "td3"},
    "DDPG (plain)": {"base": "ddpg", "plain": True},
    "ST DDPG (recipe default, actor leads)": {"base": "ddpg"},
}
PLAIN = {"sac": "SAC (plain)", "td3": "TD3 (plain)", "ddpg": "DDPG (plain)"}  # each row's baseline


def make_players(base: str = "sac", seed: int = 0):
    """The recipe's losses for ``base`` (sac, td3 or ddpg) at its default sizes, and their optimizers."""
    from omegaconf import OmegaConf

    from recipe_envs import make_env
    from recipe_losses import make_offpolicy, make_optimizer
    from recipe_models import make_deterministic_models, make_sac_models
    from recipe_schema import StsacConfig

    torch.manual_seed(seed)
    env = make_env("Hopper-v4")
    if base == "sac":
        actor, critics = make_sac_models(env, [256, 256], "cpu")
    else:
        actor, _, critics = make_deterministic_models(env, [256, 256], "cpu", 0.1, 2 if base == "td3" else 1)
    loss, _ = make_offpolicy(OmegaConf.structured(StsacConfig(algo=base)), actor, critics, env.action_spec_unbatched)
    optimizers = [make_optimizer("adam", params, 3e-4) for params in (loss.actor_params, loss.critic_params)]
    if base == "sac":
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
    from torchrl_stac import FollowerSolver, StackelbergUpdate, plain_gradients

    options = {"plain": True} if options is None else dict(options)  # {}: the default, not plain
    loss, optimizers = make_players(options.pop("base", "sac"))
    if options.pop("plain", False):
        step = lambda td: plain_gradients(loss, td)  # noqa: E731
    else:
        solver_options = {**DEFAULT, **options}
        update_options = {key: solver_options.pop(key) for key in ("leader", "hessian", "correction_every")}
        solver = FollowerSolver(solver_options.pop("regularization"), on_nonfinite="skip", **solver_options)
        step = StackelbergUpdate(loss, solver=solver, **update_options)
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
    parser.add_argument("--updates", type=int, default=24, help="timed updates per variant and round (multiple of 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.updates % max(PERIODS):
        parser.error(f"--updates must be a multiple of {max(PERIODS)} (every correction period divides it)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for index in range(args.rounds):
        for name, options in VARIANTS.items():
            rounds[name].append(seconds_per_update(options, args.updates))
        print(f"round {index + 1}/{args.rounds} done", flush=True)
    plain = statistics.median(rounds["SAC (plain)"])
    rows = ["| variant | ms per update (median) | ÷ its plain base |", "| --- | --- | --- |"]
    for name, values in rounds.items():
        base = statistics.median(rounds[PLAIN[(VARIANTS[name] or {}).get("base", "sac")]])
        rows.append(f"| {name} | {1000 * statistics.median(values):.1f} | {statistics.median(values) / base:.2f} |")
    table = "\n".join(rows)
    print(table)
    ratio = statistics.median(rounds[DEFAULT_NAME]) / plain
    print(f"ST/plain update ratio: {ratio:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "sizes": {"observation": OBS, "action": ACT, "batch": BATCH, "cells": [256, 256]},
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "updates_per_round": args.updates,
        "seconds_per_update": rounds,
        "default": DEFAULT,
        "ratio_default": ratio,
    }
    (RESULTS / "bench_offpolicy_update.json").write_text(json.dumps(record, indent=1))
    (RESULTS / "bench_offpolicy_update.md").write_text(table + f"\n\nST/plain update ratio: {ratio:.2f}\n")
    note = (
        f"\n\n`ST/plain update ratio: {ratio:.2f}` ({args.rounds} interleaved rounds of {args.updates} updates, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__})."
    )
    replace_section(ROOT / "docs" / "recipes.md", "offpolicy_cost", table + note)
    print(f"wrote {RESULTS / 'bench_offpolicy_update.json'} and .md")


if __name__ == "__main__":
    main()
