"""The results tables, generated from the result files under ``benchmarks/results/``.

    python benchmarks/bench_readme.py

One row per (recipe, env, Stackelberg configuration): the base and the Stackelberg variant at the
benchmarked budget (mean final deterministic return over seeds), the cost of a Stackelberg update
relative to the base's (measured in the same run by ``bench_update.py``, ``bench_ppo_overhead.py`` and
``bench_offpolicy_update.py``), and the verdict on final return and on the area under the learning
curve (a win needs separated 95% bootstrap CIs; fewer than ``MIN_SEEDS_FOR_VERDICT`` seeds a side: no
verdict). The README gets the recipes at their defaults (``DEFAULT_ROWS``); ``RESULTS.md`` gets those
and every other configuration measured against the same bases (``VARIANT_ROWS``). This script is the
only one that writes either table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench_offpolicy_update import (
    ACTOR_CONDITION_NAME,
    ACTOR_GAUSS_NEWTON_NAME,
    CRITIC_FISHER_NAME,
    CRITIC_LEADS_NAME,
    PLAIN,
    TD3_DEFAULT_NAME,
)
from bench_report import replace_section
from bench_stats import MIN_SEEDS_FOR_VERDICT, compare, enough_seeds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def offpolicy_rows(tag: str = "", note: str = "") -> list[tuple[str, str, str, str, str, str]]:
    """The off-policy recipe's default twins against their bases, for the groups tagged ``tag``: SAC with
    either leader on Hopper-v4 and HalfCheetah-v4, STTD3 on HalfCheetah-v4; ``note`` ends each label."""
    suffix = f"_{tag}" if tag else ""
    sac = [
        (f"`stsac_mujoco.py` ({leader} leads{note})", "offpolicy", env, f"{env}/sac{suffix}",
         f"{env}/stsac_{leader}{suffix}", f"sac_{leader}")
        for env in ("Hopper-v4", "HalfCheetah-v4")
        for leader in ("actor", "critic")
    ]  # fmt: skip
    env = "HalfCheetah-v4"
    td3 = (f"`stsac_mujoco.py` (algo=sttd3, actor leads{note})", "offpolicy", env, f"{env}/td3{suffix}",
           f"{env}/sttd3_actor{suffix}", "td3")  # fmt: skip
    return [*sac, td3]


# (recipe, summary file, env, base group, Stackelberg group, cost) — the groups as the drivers name them.
# The recipes at their defaults; a row appears once its runs exist.
DEFAULT_ROWS = [
    ("`stac_mujoco.py`", "sample_efficiency", "CartPole-v1 (αθ 0.1)", "cartpole_a/ac/k80", "cartpole_a/stac/k80", "pg"),
    ("`stac_mujoco.py`", "sample_efficiency", "Reacher-v4", "reacher/ac/k80", "reacher/stac/k80", "pg"),
    ("`stac_mujoco.py`", "sample_efficiency", "Hopper-v4", "hopper/ac/k80", "hopper/stac/k80", "pg"),
    ("`stac_mujoco.py`", "sample_efficiency", "Walker2d-v4", "walker/ac/k80", "walker/stac/k80", "pg"),
    ("`stppo_mujoco.py`", "ppo", "Hopper-v4", "Hopper-v4/ac", "Hopper-v4/stac_rel1e6", "ppo"),
    ("`stppo_mujoco.py`", "ppo", "Walker2d-v4", "Walker2d-v4/ac", "Walker2d-v4/stac_rel1e6", "ppo"),
    *offpolicy_rows(),
]
# Every other configuration measured against the same bases: earlier defaults, other λ and CG rules.
# "every 50": the off-policy schedule before one update per env step (tag every50), 50 updates after
# every 50 steps; its Stackelberg groups are judged against that schedule's base, never today's.
VARIANT_ROWS = [
    *offpolicy_rows("every50", "; every 50"),
    *(  # the runs on the earlier SAC defaults (tag prefix), never mixed with today's
        (
            f"`stsac_mujoco.py` ({leader} leads; earlier SAC defaults)",
            "offpolicy",
            env,
            f"{env}/sac_prefix",
            f"{env}/stsac_{leader}_prefix",
            "sac_critic_exact" if leader == "critic" else "sac_actor",
        )
        for env in ("Hopper-v4", "HalfCheetah-v4")
        for leader in ("actor", "critic")
    ),
    *(  # the actor leader's default before CG returned its last iterate
        (
            "`stsac_mujoco.py` (actor leads, smallest-residual CG; every 50)",
            "offpolicy",
            env,
            f"{env}/sac_every50",
            f"{env}/stsac_actor_cgmin",
            "sac_actor",
        )
        for env in ("Hopper-v4", "HalfCheetah-v4")
    ),
    (  # STTD3's default before CG returned its last iterate
        "`stsac_mujoco.py` (algo=sttd3, actor leads, smallest-residual CG; every 50)",
        "offpolicy",
        "HalfCheetah-v4",
        "HalfCheetah-v4/td3_every50",
        "HalfCheetah-v4/sttd3_actor_cgmin",
        "td3",
    ),
    *(  # the critic leader's earlier default, the actor's exact Hessian with λ = 1, under each CG rule
        (
            f"`stsac_mujoco.py` (critic leads, exact Hessian λ = 1, {rule} CG; every 50)",
            "offpolicy",
            env,
            f"{env}/sac_every50",
            f"{env}/stsac_critic_{tag}",
            "sac_critic_exact",
        )
        for tag, rule in (("cgmin", "smallest-residual"), ("cglast", "last-iterate"))
        for env in ("Hopper-v4", "HalfCheetah-v4")
    ),
    # λ from the conditioning (issue 24), against the same bases; rows appear once their runs exist
    *(
        (
            "`stac_mujoco.py` (condition-λ κ = 10)",
            "sample_efficiency",
            env,
            f"{cell}/ac/k80",
            f"{cell}/stac_cond10/k80",
            "pg_condition",
        )
        for cell, env in (("reacher", "Reacher-v4"), ("hopper", "Hopper-v4"), ("walker", "Walker2d-v4"))
    ),
    *(
        (
            "`stppo_mujoco.py` (condition-λ κ = 10, bound ρ = 1)",
            "ppo",
            env,
            f"{env}/ac",
            f"{env}/stac_cond10b1",
            "ppo_condition",
        )
        for env in ("Hopper-v4", "Walker2d-v4")
    ),
    *(
        (f"`stsac_mujoco.py` ({what}; every 50)", "offpolicy", env, f"{env}/sac_every50", f"{env}/{group}", cost)
        for what, group, cost, envs in (
            (
                "actor leads, condition-λ κ = 100, smallest-residual CG",
                "stsac_actor_cond",
                "sac_actor_condition",
                ("Hopper-v4", "HalfCheetah-v4"),
            ),
            (  # the critics' Gauss-Newton curvature (PSD) in place of their exact Hessian
                "actor leads, Gauss-Newton",
                "stsac_actor_gn",
                "sac_actor_gauss_newton",
                ("Hopper-v4",),
            ),
            (  # today's critic-leader default, before the CG fix (on HalfCheetah: the default row)
                "critic leads, Fisher + condition-λ κ = 100, smallest-residual CG",
                "stsac_critic_fishercond",
                "sac_critic",
                ("Hopper-v4",),
            ),
        )
        for env in envs
    ),
]
BASE_NAMES = {
    **dict.fromkeys(("pg", "pg_condition"), "AC"),
    **dict.fromkeys(("ppo", "ppo_condition"), "PPO"),
    **dict.fromkeys(
        ("sac_actor", "sac_critic", "sac_critic_exact", "sac_actor_condition", "sac_actor_gauss_newton"), "SAC"
    ),
    "td3": "TD3",
}


def costs() -> dict[str, str]:
    """Stackelberg ÷ base time per update (per iteration for the paper's loop, per run for PPO), per
    cost key of the rows; SAC's per leader and TD3's, each at the recipe's defaults over its plain base."""
    pg = json.loads((RESULTS / "bench_update.json").read_text())["stac_over_ac"]
    ppo = json.loads((RESULTS / "ppo_overhead.json").read_text())["median_ratio"]
    offpolicy = json.loads((RESULTS / "bench_offpolicy_update.json").read_text())
    seconds = {name: statistics.median(values) for name, values in offpolicy["seconds_per_update"].items()}
    ratios = {
        "pg": pg["stac"],
        "pg_condition": pg["stac_condition_k100"],  # κ sets λ, not the work: timed at κ = 100
        "ppo": ppo,
        "sac_actor": offpolicy["ratio_default"],
        "sac_critic": seconds[CRITIC_FISHER_NAME] / seconds[PLAIN["sac"]],
        "sac_critic_exact": seconds[CRITIC_LEADS_NAME] / seconds[PLAIN["sac"]],
        "td3": seconds[TD3_DEFAULT_NAME] / seconds[PLAIN["td3"]],
        "sac_actor_condition": seconds[ACTOR_CONDITION_NAME] / seconds[PLAIN["sac"]],
        "sac_actor_gauss_newton": seconds[ACTOR_GAUSS_NEWTON_NAME] / seconds[PLAIN["sac"]],
    }
    cost = {key: f"{ratio:.2f}×" for key, ratio in ratios.items()}
    ppo_condition = RESULTS / "ppo_overhead_condition.json"  # bench_ppo_overhead.py --output
    ppo_condition_ratio = json.loads(ppo_condition.read_text())["median_ratio"] if ppo_condition.exists() else None
    cost["ppo_condition"] = "not timed" if ppo_condition_ratio is None else f"{ppo_condition_ratio:.2f}×"
    return cost


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """The markdown table of ``rows`` (``DEFAULT_ROWS``, ``VARIANT_ROWS``), without the rows whose
    groups have no result files yet."""
    cost = costs()
    lines = [
        "| recipe | env | frames | seeds | base: final return | Stackelberg: final return | cost "
        "| verdict (final / AUC) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe, summary_name, env, base_key, stackelberg_key, cost_key in rows:
        summary = json.loads((RESULTS / f"{summary_name}_summary.json").read_text())
        if base_key not in summary or stackelberg_key not in summary:
            continue
        base, stackelberg = summary[base_key], summary[stackelberg_key]
        seeds = f"{stackelberg['seeds']} vs {base['seeds']}"
        if not enough_seeds(stackelberg, base):
            verdict = "no verdict yet"
        else:
            verdict = " / ".join(compare(stackelberg, base, score) for score in ("final", "auc"))
        lines.append(
            f"| {recipe} | {env} | {stackelberg['frames'] // 1000}k | {seeds} | {BASE_NAMES[cost_key]} "
            f"{base['final_mean']:.0f} | {stackelberg['final_mean']:.0f} | {cost[cost_key]} | {verdict} |"
        )
    return lines


def main() -> None:
    preamble = [
        "Generated by `python benchmarks/bench_readme.py` from `benchmarks/results/`. Mean final",
        "deterministic return over seeds; cost: Stackelberg ÷ base wall time, both measured in one run (per",
        "iteration of the paper's loop, per PPO run, per SAC or TD3 update); verdict of the Stackelberg variant",
        "against its base (win or loss: separated 95% CIs; with fewer than",
        f"{MIN_SEEDS_FOR_VERDICT} seeds a side, no verdict yet).",
        "",
    ]
    defaults = table(DEFAULT_ROWS)
    readme = [
        *preamble,
        *defaults,
        "",
        "Every other configuration measured against the same bases (earlier defaults, other λ and CG",
        "rules, and the off-policy recipe on its earlier schedule of 50 updates every 50 steps, rows",
        '"every 50"): the table at the top of',
        "[`benchmarks/RESULTS.md`](benchmarks/RESULTS.md).",
    ]
    every = [
        "# Every Stackelberg configuration against its base",
        "",
        *preamble,
        "The recipes at their defaults (the README's table):",
        "",
        *defaults,
        "",
        "Every other configuration measured against the same bases:",
        "",
        *table(VARIANT_ROWS),
    ]
    replace_section(ROOT / "README.md", "results", "\n".join(readme))
    replace_section(ROOT / "benchmarks" / "RESULTS.md", "configurations", "\n".join(every))
    print("\n".join(every))


if __name__ == "__main__":
    main()
