"""Time one AC iteration and one STAC iteration at the paper's scale, in the same run.

Scale: 64×64 tanh actor (TanhNormal) and critic, Hopper's dimensions (11 observations, 3 actions),
a batch of 4000 transitions holding several episodes, k = 80 full-batch critic steps (Adam),
10 conjugate-gradient iterations. The batch is synthetic (random observations and rewards with
collector-shaped done flags) so the timing measures the update alone, not the simulator.

An iteration = Monte-Carlo critic targets + GAE advantages, k critic steps, actor loss backward,
[STAC only: ImplicitGradientHook], actor step. AC and STAC repetitions are interleaved and the
median of each is compared, since the machine is shared and noisy. Two STAC variants run: the
default solver settings (at most 10 CG iterations, relative tolerance 1e-6, warm start) and a
worst case that always runs all 10 iterations (tolerance 0).

    python benchmarks/bench_update.py [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator

from torchrl_stac import CriticLoss, FollowerSolver, ImplicitGradientHook, StackelbergActorLoss

OBS, ACT, N, K, CG_ITERS = 11, 3, 4000, 80, 10
RESULTS = Path(__file__).parent / "results"


def make_batch(actor, seed: int = 0) -> TensorDict:
    gen = torch.Generator().manual_seed(seed)
    done = torch.zeros(N, 1, dtype=torch.bool)
    done[torch.randint(0, N, (N // 200,), generator=gen)] = True  # ~20 episode ends
    terminated = done & (torch.rand(N, 1, generator=gen) < 0.7)
    td = TensorDict(
        {
            "observation": torch.randn(N, OBS, generator=gen),
            "step_count": torch.randint(0, 1000, (N, 1), generator=gen),
            ("next", "observation"): torch.randn(N, OBS, generator=gen),
            ("next", "reward"): torch.randn(N, 1, generator=gen),
            ("next", "done"): done,
            ("next", "terminated"): terminated,
            ("next", "truncated"): done & ~terminated,
        },
        batch_size=[N],
    )
    with torch.no_grad():
        actor(td)
    return td


VARIANTS = {
    "ac": None,
    "stac": dict(tol=1e-6),
    "stac_10_iters": dict(tol=0.0),
    "stac_condition_k100": dict(tol=1e-6, condition_number=100.0),  # Lanczos 10 steps every correction
}


def build(solver_options: dict | None, seed: int = 0):
    torch.manual_seed(seed)
    actor_net = nn.Sequential(
        MLP(in_features=OBS, out_features=2 * ACT, num_cells=[64, 64], activation_class=nn.Tanh),
        NormalParamExtractor(),
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    critic = ValueOperator(
        MLP(in_features=OBS, out_features=1, num_cells=[64, 64], activation_class=nn.Tanh), in_keys=["observation"]
    )
    critic_loss = CriticLoss(critic).make_value_estimator(gamma=0.99)
    actor_loss = StackelbergActorLoss(actor, critic, normalize_advantage=True)
    actor_loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    actor_loss.set_keys(value_target="gae_target")
    hook = None
    if solver_options is not None:
        solver = FollowerSolver(500.0, cg_iterations=CG_ITERS, **solver_options)
        hook = ImplicitGradientHook(actor_loss, critic_loss, solver=solver)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    return actor, actor_loss, critic_loss, hook, actor_opt, critic_opt


def iteration(td, actor_loss, critic_loss, hook, actor_opt, critic_opt) -> dict[str, float]:
    """One training iteration (STAC when ``hook`` is given, else AC); returns seconds per phase."""
    times = {}
    td = td.clone()  # a fresh collector batch each iteration (not timed)
    start = time.perf_counter()
    with torch.no_grad():
        critic_loss.value_estimator(td)
        actor_loss.value_estimator(td)
    times["targets"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(K):
        critic_opt.zero_grad()
        critic_loss(td)["loss_critic"].backward()
        critic_opt.step()
    times["critic"] = time.perf_counter() - start
    start = time.perf_counter()
    actor_opt.zero_grad()
    actor_loss(td)["loss_objective"].backward()
    times["actor_backward"] = time.perf_counter() - start
    start = time.perf_counter()
    if hook is not None:
        times["cg_iterations"] = float(hook(td)["solver_iterations"])
    times["implicit"] = time.perf_counter() - start
    start = time.perf_counter()
    actor_opt.step()
    times["actor_step"] = time.perf_counter() - start
    times["total"] = sum(v for k, v in times.items() if k != "cg_iterations")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    players = {name: build(options) for name, options in VARIANTS.items()}
    td = make_batch(players["ac"][0])
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in players}
    for _, *rest in players.values():  # warm-up
        iteration(td, *rest)
    for _ in range(args.repeats):
        for name, (_, *rest) in players.items():
            runs[name].append(iteration(td, *rest))
    phases = ["targets", "critic", "actor_backward", "implicit", "actor_step", "total", "cg_iterations"]
    median = {name: {p: statistics.median(r.get(p, 0.0) for r in rs) for p in phases} for name, rs in runs.items()}
    ratios = {name: median[name]["total"] / median["ac"]["total"] for name in VARIANTS if name != "ac"}
    print(f"{'phase (median s)':<18}" + "".join(f"{name:>15}" for name in median))
    for phase in phases:
        print(f"{phase:<18}" + "".join(f"{median[name][phase]:>15.4f}" for name in median))
    print(
        f"STAC / AC iteration time: {ratios['stac']:.3f}  (target <= 1.15; median of {args.repeats}, "
        f"{args.threads} threads)"
    )
    print(f"STAC with all 10 CG iterations / AC: {ratios['stac_10_iters']:.3f}")
    print(f"STAC with λ from the condition number (κ = 100) / AC: {ratios['stac_condition_k100']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "transitions": N,
        "critic_steps": K,
        "cg_iterations": CG_ITERS,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    (RESULTS / "bench_update.json").write_text(
        json.dumps({"config": meta, "median_seconds": median, "stac_over_ac": ratios, "runs": runs}, indent=2)
    )
    with open(RESULTS / "bench_update.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "repeat", *phases])
        for name, rs in runs.items():
            for i, r in enumerate(rs):
                writer.writerow([name, i, *(f"{r.get(p, 0.0):.6f}" for p in phases)])
    table = [
        "| phase (median seconds) | AC | STAC | STAC, all 10 CG iterations | STAC, condition-λ κ = 100 |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {p} | " + " | ".join(f"{median[name][p]:.4f}" for name in median) + " |" for p in phases),
        f"| **STAC / AC** | 1 | **{ratios['stac']:.3f}** | {ratios['stac_10_iters']:.3f} | "
        f"{ratios['stac_condition_k100']:.3f} |",
    ]
    note = f"\n{args.repeats} interleaved repetitions, {args.threads} threads, torch {torch.__version__}.\n"
    (RESULTS / "bench_update.md").write_text("\n".join(table) + "\n" + note)
    print(f"wrote {RESULTS}/bench_update.json, .csv and .md")


if __name__ == "__main__":
    main()
