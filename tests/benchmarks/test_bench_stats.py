"""Statistics of the benchmark reports (benchmarks/bench_stats.py, sample_efficiency.py) on data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bench_readme
import bench_sample_efficiency as se
import bench_stats


def records(returns: list[float]) -> list[dict]:
    """One run per return, each with a two-point evaluation curve that ends at that return."""
    return [{"eval_curve": [[0, 0.0], [100, r]]} for r in returns]


def test_iqm_drops_the_outer_quartiles():
    summary = bench_stats.summarize(records([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5]))
    assert summary["final_iqm"] == pytest.approx(1.75)  # mean of the middle four: 1, 1.5, 2, 2.5
    assert summary["final_mean"] == pytest.approx(1.25)
    assert summary["auc_mean"] == pytest.approx(0.625)  # trapezoid from 0 to the final return


def test_peak_is_each_runs_best_evaluation_and_the_drop_its_mean_fall_to_the_end():
    runs = [{"eval_curve": [[0, 0.0], [50, 9.0], [100, 4.0]]}, {"eval_curve": [[0, 0.0], [50, 1.0], [100, 3.0]]}]
    summary = bench_stats.summarize(runs)
    assert summary["peak_values"] == [9.0, 3.0] and summary["peak_mean"] == pytest.approx(6.0)
    assert summary["peak_drop_mean"] == pytest.approx((9.0 - 4.0 + 0.0) / 2)


def test_bootstrap_ci_covers_the_mean_shrinks_with_n_and_is_reproducible():
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 2, 10), rng.normal(10, 2, 1000)
    summary = bench_stats.summarize(records(list(small)))
    low, high = summary["final_ci"]
    assert low < small.mean() < high
    low_l, high_l = bench_stats.summarize(records(list(large)))["final_ci"]
    assert high_l - low_l < (high - low) / 5
    assert low_l < 10 < high_l
    assert bench_stats.summarize(records(list(small))) == summary  # fixed bootstrap seed: same report


def test_probability_of_improvement_counts_pairs():
    first, second = bench_stats.summarize(records([1.0, 2.0, 3.0])), bench_stats.summarize(records([2.0, 0.0]))
    pairs = [(x, y) for x in (1.0, 2.0, 3.0) for y in (2.0, 0.0)]
    exact = sum((x > y) + 0.5 * (x == y) for x, y in pairs) / len(pairs)  # ties count one half
    point, (low, high) = bench_stats.probability_of_improvement(first, second)
    assert point == pytest.approx(exact)
    assert 0.0 <= low <= point <= high <= 1.0
    assert bench_stats.improvement_line(first, second, ("A", "B")).startswith(f"P(A > B): final {exact:.2f} [")


def test_verdict_needs_separated_intervals():
    stac = {"final_mean": 400.0, "final_ci": (380.0, 420.0), "auc_mean": 300.0, "auc_ci": (290.0, 310.0)}
    assert bench_stats.verdict(stac, {"final_mean": 200.0, "final_ci": (150.0, 250.0)}).startswith("STAC wins")
    assert bench_stats.verdict(stac, {"final_mean": 390.0, "final_ci": (350.0, 430.0)}).startswith("tie")
    assert bench_stats.verdict(stac, {"final_mean": 480.0, "final_ci": (470.0, 490.0)}).startswith("STAC loses")
    assert (
        bench_stats.verdict(stac, {"auc_mean": 100.0, "auc_ci": (90.0, 110.0)}, "auc")
        == "STAC wins: +200.0 (300.0 vs 100.0)"
    )


def test_tally_counts_each_outcome():
    outcomes = [("a", "win"), ("b", "tie"), ("c", "win"), ("d", "loss")]
    assert se.tally(outcomes) == "wins 2, ties 1, losses 1 (a: win; b: tie; c: win; d: loss)"
    assert se.tally([]) == "no cell has enough seeds yet"


def test_aggregate_writes_table_plot_and_report(tmp_path, monkeypatch):
    results = tmp_path / "results" / "sample_efficiency"
    monkeypatch.setattr(se, "RESULTS", results)
    monkeypatch.setattr(se, "ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    runs = (("stac", 400.0, 80, 5), ("ac", 100.0, 80, 5), ("stac", 400.0, 1, 3), ("ac", 9.0, 1, 1))
    config = {key: 1 for key in se.SETUP_KEYS} | {"env": "CartPole-v1", "actor_lr": 0.1}
    for algo, level, k, seeds in runs:
        for seed in range(seeds):
            record = {
                "cell": "cartpole_a",
                "algo": algo,
                "critic_steps": k,
                "seed": seed,
                "wall_seconds": 1.0,
                "frames": 300,
                "eval_curve": [[100, level / 4], [200, level / 2], [300, level + seed]],
                "config": config,
            }
            path = se.result_path("cartpole_a", algo, k, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
    se.command_aggregate(None)
    summary = json.loads((tmp_path / "benchmarks" / "results" / "sample_efficiency_summary.json").read_text())
    assert summary["cartpole_a/stac/k80"]["final_mean"] == pytest.approx(402.0)
    assert summary["cartpole_a/ac/k80"]["seeds"] == 5
    report = (tmp_path / "benchmarks" / "RESULTS.md").read_text()
    assert "**cartpole_a, k = 80** (5 vs 5 seeds): final return STAC wins: +300.0" in report
    assert "**cartpole_a, k = 1** (3 vs 1 seeds): too few seeds for a verdict" in report
    assert "| cartpole_a (CartPole-v1) | 1 | 1 | 1 | 0.1 | 1 |" in report
    stac_vs_ac, many_vs_one = report.split("STAC against AC:")[1].split("k = 80 against k = 1:")
    assert "final return: wins 1, ties 0, losses 0 (cartpole_a k=80: win)" in stac_vs_ac
    assert "AUC: wins 1, ties 0, losses 0 (cartpole_a k=80: win)" in stac_vs_ac
    assert "final return: wins 0, ties 1, losses 0 (cartpole_a STAC: tie)" in many_vs_one
    assert "by final return: no cell has enough seeds yet" in report
    assert "incomplete" in report and "**hopper, k = 1**: not run yet" in report
    assert "P(STAC > AC): final 1.00 [" in report
    for png in ("sample_efficiency.png", "sample_efficiency_aggregates.png"):
        assert (tmp_path / "benchmarks" / "results" / png).stat().st_size > 10_000


def test_claims_name_the_best_group_and_whether_it_is_clear():
    def group(mean: float) -> dict:
        auc = mean / 2
        return {
            "seeds": 5,
            "final_mean": mean,
            "final_ci": (mean - 5, mean + 5),
            "auc_mean": auc,
            "auc_ci": (auc - 1, auc + 1),
        }

    summary = {
        "hopper/stac/k80": group(300.0),
        "hopper/stac/k1": group(200.0),
        "hopper/ac/k80": group(100.0),
        "hopper/ac/k1": group(296.0),
    }
    lines = "\n".join(se.claim_lines(summary))
    assert "by final return: hopper: STAC k=80;" in lines  # 300 vs 296: best, but the CIs overlap
    summary["hopper/ac/k1"] = group(250.0)
    lines = "\n".join(se.claim_lines(summary))
    assert "by final return: hopper: STAC k=80 (CI clear of the other three);" in lines
    assert "by AUC: hopper: STAC k=80 (CI clear of the other three)." in lines
    assert "final return: wins 1, ties 0, losses 1 (hopper k=1: loss; hopper k=80: win)" in lines


def test_throughput_medians_are_per_key_and_keep_missing_sb3():
    import bench_throughput

    rounds = [{"ratios": {"collection_over_raw": r, "stac_over_sb3_a2c": None}} for r in (0.82, 0.56, 0.79)]
    medians = bench_throughput.median_of(rounds, "ratios")
    assert medians == {"collection_over_raw": 0.79, "stac_over_sb3_a2c": None}


def test_offpolicy_diagnostics_table_pools_seeds_and_splits_at_half_the_frames():
    import bench_offpolicy

    def run(ratios: list[float], flags: list[float], eigenvalues: bool = False) -> dict:
        frames = [1000 * (i + 1) for i in range(len(ratios))]
        diagnostics = {
            "correction_ratio": list(zip(frames, ratios, strict=True)),
            "cosine_partial_total": [(f, 0.5) for f in frames],
            "nonpositive_curvature": list(zip(frames, flags, strict=True)),
            "solver_iterations": [(f, 3.0) for f in frames],
        }
        if eigenvalues:  # a run with condition-λ: min = -ratio, max = 10 x ratio, λ = ratio / 10
            diagnostics["hessian_eigenvalue_min"] = [(f, -r) for f, r in zip(frames, ratios, strict=True)]
            diagnostics["hessian_eigenvalue_max"] = [(f, 10 * r) for f, r in zip(frames, ratios, strict=True)]
            diagnostics["regularization"] = [(f, r / 10) for f, r in zip(frames, ratios, strict=True)]
        return {"diagnostics": diagnostics}

    groups = {
        "Hopper-v4/stsac_critic": [run([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1]), run([5.0, 6.0, 7.0, 8.0], [0, 1, 1, 1])],
        "Hopper-v4/sac": [{"diagnostics": {}}],  # no Stackelberg diagnostics: no row
        "Hopper-v4/stsac_actor_eig": [run([1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0], eigenvalues=True)],
    }
    rows = bench_offpolicy.diagnostics_table(groups)
    assert len(rows) == 6  # header, rule, "all" and "second half" of the two Stackelberg groups
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]
    # all: median of 1..8 = 4.5, share of flags 5/8; second half (frames > 2000): median of 3,4,7,8 = 5.5, 4/4
    eig = "Hopper-v4/stsac_actor_eig"
    assert cells[0] == [eig, "1", "all", "2.5", "0.500", "0.00", "not logged", "3.00", "-2.5 / 25", "0.25"]
    assert cells[1][2:4] == ["second half", "3.5"] and cells[1][-2:] == ["-3.5 / 35", "0.35"]
    critic = "Hopper-v4/stsac_critic"
    assert cells[2] == [critic, "2", "all", "4.5", "0.500", "0.62", "not logged", "3.00", "not logged", "not logged"]
    assert cells[3][:4] == ["Hopper-v4/stsac_critic", "2", "second half", "5.5"] and cells[3][5] == "1.00"


def test_offpolicy_condition_lambda_is_the_rule_on_the_logged_eigenvalues():
    """Under condition-λ the table's λ is max(floor, (μ_max − κ μ_min)/(κ − 1)) of each batch's logged
    means, not the logged λ (files before ac7d683 averaged it with the plain updates' 0); other runs
    keep their logged λ."""
    import bench_offpolicy

    frames = [1000, 2000, 3000]
    diagnostics = {
        "correction_ratio": [(f, 1.0) for f in frames],
        "cosine_partial_total": [(f, 1.0) for f in frames],
        "nonpositive_curvature": [(f, 0.0) for f in frames],
        "solver_iterations": [(f, 3.0) for f in frames],
        "hessian_eigenvalue_min": [(f, m) for f, m in zip(frames, [1.0, -1.0, 0.1], strict=True)],
        "hessian_eigenvalue_max": [(f, 1000.0) for f in frames],
        "regularization": [(f, 0.25) for f in frames],  # diluted: ¼ of the solves' λ
    }
    condition = {
        "config": "regularization_decay: condition\ncondition_number: 101.0\nregularization_floor: 0.5\n",
        "diagnostics": diagnostics,
    }
    # (1000 − 101 μ_min)/100 for μ_min = 1, −1, 0.1: 8.99, 11.01, 9.899
    solved = [value for _, value in bench_offpolicy.solved_regularization(condition)]
    assert solved == pytest.approx([8.99, 11.01, 9.899])
    fixed = {"config": "regularization_decay: none\nregularization: 1.0\n", "diagnostics": diagnostics}
    assert bench_offpolicy.solved_regularization(fixed) == diagnostics["regularization"]
    rows = bench_offpolicy.diagnostics_table({"Hopper-v4/stsac_actor_cond": [condition]})
    assert rows[2].endswith("| 9.9 |")  # median of the rule's λ, all rows


def test_sb3_reference_with_the_recipe_settings_takes_them_from_the_recipe_schema():
    """``sb3 --schedule recipe_settings`` gives SB3's SAC the recipe's SAC defaults (Tianshou's MuJoCo
    settings), read from ``StsacConfig`` and ``OFFPOLICY_LEARNING_RATE``, on SB3's per-step schedule;
    ``recipe_all`` on the recipe's earlier schedule too, 50 steps then 50 updates (the ``every50`` groups'),
    which its results were trained on, whatever the recipe's default is now."""
    import bench_offpolicy
    from recipe_schema import OFFPOLICY_LEARNING_RATE, StsacConfig

    variant, options = bench_offpolicy.SB3_SCHEDULES["recipe_settings"]
    assert variant == "sb3_sac_recipe_settings"
    assert options(100_000) == {
        "learning_starts": StsacConfig.init_random_frames,
        "learning_rate": OFFPOLICY_LEARNING_RATE["sac"],
        "ent_coef": StsacConfig.alpha_init,
    }
    assert options(20_000)["learning_starts"] == 2_000  # the recipe's warm-up cap: 10% of the run
    assert "train_freq" not in options(100_000)  # SB3's own: one update after every step
    variant, options = bench_offpolicy.SB3_SCHEDULES["recipe_all"]  # and on the recipe's schedule
    assert (variant, options(100_000)["learning_rate"]) == ("sb3_sac_recipe_all", OFFPOLICY_LEARNING_RATE["sac"])
    assert (options(100_000)["train_freq"], options(100_000)["gradient_steps"]) == ((50, "step"), 50)
    assert StsacConfig.frames_per_batch == 1  # today's default is one update per step: not what it measures


def test_offpolicy_tagged_variants_list_only_the_overrides_that_set_them_apart():
    import bench_offpolicy

    shared = ["total_frames=100000", "threads=1", "logger=csv", "eval_interval=5000", "checkpoint_interval=10000"]
    groups = {
        "Hopper-v4/sac": [{"tag": "", "overrides": shared}],
        "Hopper-v4/stsac_actor_lam": [{"tag": "lam", "overrides": [*shared, "regularization=100"]}] * 2,
        "Hopper-v4/sac_prefix": [{"tag": "prefix", "overrides": shared}],  # the defaults of its time
        "Hopper-v4/sb3_sac_prefix": [{"tag": "prefix"}],  # SB3's runs record no recipe overrides
    }
    assert bench_offpolicy.tagged_variants(groups) == [
        "- `Hopper-v4/sac_prefix` (1 seed(s)): no overrides",
        "- `Hopper-v4/sb3_sac_prefix` (1 seed(s)): no overrides",
        "- `Hopper-v4/stsac_actor_lam` (2 seed(s)): `regularization=100`",
    ]


def test_offpolicy_verdicts_compare_each_stackelberg_and_sb3_group_with_the_base_of_its_own_tag():
    import bench_offpolicy
    from bench_stats import summarize

    def runs(tag: str, level: float) -> list[dict]:
        curves = [[[50_000, level / 2 + seed], [100_000, level + seed]] for seed in range(3)]
        return [{"tag": tag, "eval_curve": curve, "seed": seed} for seed, curve in enumerate(curves)]

    groups = {
        "Hopper-v4/sac": runs("", 2000.0),
        "Hopper-v4/stsac_actor": runs("", 2100.0),
        "Hopper-v4/sac_prefix": runs("prefix", 400.0),
        "Hopper-v4/stsac_actor_prefix": runs("prefix", 1000.0),
        "Hopper-v4/stsac_critic_lam": runs("lam", 3000.0),  # a try without a base of its tag
        "Hopper-v4/sb3_sac_recipe_settings": runs("", 1900.0),  # the SB3 reference, against sac too
    }
    summary = {key: summarize(records) for key, records in groups.items()}
    lines = bench_offpolicy.same_tag_verdicts(groups, summary)
    assert len(lines) == 3
    assert lines[0].startswith("- **Hopper-v4, stsac_actor vs SAC** (3 vs 3 seeds): final return STSAC wins: +100.0")
    assert lines[1].startswith("- **Hopper-v4, sb3_sac_recipe_settings vs SAC** (3 vs 3 seeds): final return SB3 loses")
    assert lines[2].startswith("- **Hopper-v4, stsac_actor_prefix vs SAC (prefix)** (3 vs 3 seeds)")
    assert "+600.0 (1001.0 vs 401.0)" in lines[2]  # against sac_prefix, never against the new sac


def offpolicy_runs(variant: str, tag: str, level: float, env: str = "Hopper-v4", **config) -> list[dict]:
    """Three result records of ``bench_offpolicy.py`` (seeds 0–2): the recipe's defaults plus ``config``,
    each ending at ``level + seed`` (AUC: ``0.75 level + seed``)."""
    from omegaconf import OmegaConf

    import bench_offpolicy
    from recipe_schema import StsacConfig

    algo, leader = bench_offpolicy.VARIANTS[variant].values()
    base = {"env": env, "algo": algo, "leader": leader, "total_frames": 100_000, "seed": 0}
    yaml = OmegaConf.to_yaml(OmegaConf.merge(OmegaConf.structured(StsacConfig), {**base, **config}))
    curves = [[[50_000, level / 2 + seed], [100_000, level + seed]] for seed in range(3)]
    run = {"env": env, "variant": variant, "tag": tag, "config": yaml}
    return [{**run, "seed": seed, "eval_curve": curve} for seed, curve in enumerate(curves)]


def test_a_tagged_stackelberg_try_is_judged_against_the_untagged_base_only_if_it_changed_the_solve_alone():
    """``stsac_critic_fishercond`` (Fisher curvature, condition-λ) trained today's base, so it meets
    ``sac``; a try that also changed the learning rate, or ran on other defaults, does not."""
    import bench_offpolicy
    from bench_stats import summarize

    groups = {
        "Hopper-v4/sac": offpolicy_runs("sac", "", 2000.0),
        "Hopper-v4/stsac_critic_fishercond": offpolicy_runs(
            "stsac_critic", "fishercond", 1000.0, hessian="fisher", regularization_decay="condition"
        ),
        "Hopper-v4/stsac_actor_cond_lr": offpolicy_runs(
            "stsac_actor", "cond_lr", 3000.0, regularization_decay="condition", actor_lr=3e-4
        ),
        "Hopper-v4/sac_cond": offpolicy_runs(
            "sac", "cond", 3000.0, regularization_decay="condition"
        ),  # not a Stackelberg group
    }
    summary = {key: summarize(records) for key, records in groups.items()}
    lines = bench_offpolicy.solve_try_verdicts(groups, summary)
    assert len(lines) == 1
    assert lines[0].startswith(
        "- **Hopper-v4, stsac_critic_fishercond vs SAC** (3 vs 3 seeds): final return STSAC loses"
    )
    assert "-1000.0 (1001.0 vs 2001.0)" in lines[0]
    # the per-seed table sets the same groups side by side, seed by seed (AUC: the curve's mean)
    table = bench_offpolicy.per_seed_tables(groups, summary)
    assert table[2:5] == [
        "| seed | `sac` | `stsac_critic_fishercond` |",
        "| --- | --- | --- |",
        "| 0 | 2000 / 1500 | 1000 / 750 |",
    ]
    assert table[6] == "| 2 | 2002 / 1502 | 1002 / 752 |"


def test_a_solve_try_on_earlier_defaults_meets_the_base_group_that_kept_them():
    """After a default changes (here the batch size), the earlier default groups move to a tag; a solve
    try that ran on them meets that tagged base, in its verdict and in the per-seed table, never the
    new untagged one."""
    import bench_offpolicy
    from bench_stats import summarize

    groups = {
        "Hopper-v4/sac": offpolicy_runs("sac", "", 2000.0),
        "Hopper-v4/sac_bs128": offpolicy_runs("sac", "bs128", 500.0, batch_size=128),
        "Hopper-v4/stsac_actor_bs128": offpolicy_runs("stsac_actor", "bs128", 600.0, batch_size=128),
        "Hopper-v4/stsac_actor_cgmin": offpolicy_runs("stsac_actor", "cgmin", 700.0, batch_size=128, cg_iterations=5),
    }
    assert bench_offpolicy.solve_try_base(groups, "Hopper-v4/stsac_actor_cgmin") == "Hopper-v4/sac_bs128"
    assert bench_offpolicy.solve_try_base(groups, "Hopper-v4/stsac_actor_bs128") is None  # its tag's base judges it
    summary = {key: summarize(records) for key, records in groups.items()}
    lines = bench_offpolicy.solve_try_verdicts(groups, summary)
    assert len(lines) == 1
    assert lines[0].startswith(
        "- **Hopper-v4, stsac_actor_cgmin vs SAC (bs128)** (3 vs 3 seeds): final return STSAC wins"
    )
    assert "+200.0 (701.0 vs 501.0)" in lines[0]
    table = bench_offpolicy.per_seed_tables(groups, summary)
    assert table[0] == "Hopper-v4, SAC (bs128) and its Stackelberg twin, final / AUC per seed:"
    assert table[2] == "| seed | `sac_bs128` | `stsac_actor_bs128` | `stsac_actor_cgmin` |"
    assert (
        len(table) == 8
    )  # title, blank, header, rule, 3 seeds, blank; no table for the untagged sac: no twin and no try trained it


def test_per_seed_tables_set_each_base_beside_its_twins_and_their_solve_tries():
    """TD3's table holds ``td3``, the default ``sttd3_actor`` and a solve try of it (another CG rule);
    a base without a Stackelberg group beside it gets no table."""
    import bench_offpolicy
    from bench_stats import summarize

    env = "HalfCheetah-v4"
    groups = {
        f"{env}/sac": offpolicy_runs("sac", "", 7000.0, env),
        f"{env}/td3": offpolicy_runs("td3", "", 5000.0, env),
        f"{env}/sttd3_actor": offpolicy_runs("sttd3_actor", "", 6000.0, env),
        f"{env}/sttd3_actor_cgmin": offpolicy_runs("sttd3_actor", "cgmin", 5800.0, env),
        f"{env}/sttd3_actor_lr": offpolicy_runs("sttd3_actor", "lr", 9000.0, env, actor_lr=3e-4),  # not a solve try
    }
    summary = {key: summarize(records) for key, records in groups.items()}
    assert bench_offpolicy.per_seed_tables(groups, summary) == [
        f"{env}, TD3 and its Stackelberg twin, final / AUC per seed:",
        "",
        "| seed | `td3` | `sttd3_actor` | `sttd3_actor_cgmin` |",
        "| --- | --- | --- | --- |",
        "| 0 | 5000 / 3750 | 6000 / 4500 | 5800 / 4350 |",
        "| 1 | 5001 / 3751 | 6001 / 4501 | 5801 / 4351 |",
        "| 2 | 5002 / 3752 | 6002 / 4502 | 5802 / 4352 |",
        "",
    ]


def write_summaries(directory) -> None:
    """Result summaries and timings for the results tables: a few groups of each family."""
    files = {
        "bench_update.json": {"stac_over_ac": {"stac": 1.0, "stac_condition_k100": 1.1}},
        "ppo_overhead.json": {"median_ratio": 1.0},
        "bench_offpolicy_update.json": {
            "ratio_default": 1.5,
            "seconds_per_update": {
                bench_readme.PLAIN["sac"]: [2.0, 2.0, 3.0],
                bench_readme.CRITIC_LEADS_NAME: [2.0, 2.5, 9.0],
                bench_readme.PLAIN["td3"]: [1.0, 4.0, 4.0],
                bench_readme.TD3_DEFAULT_NAME: [1.0, 7.0, 8.0],
                bench_readme.ACTOR_CONDITION_NAME: [3.0, 3.0, 3.0],
                bench_readme.CRITIC_FISHER_NAME: [3.0, 4.0, 9.0],
                bench_readme.ACTOR_GAUSS_NEWTON_NAME: [5.0, 5.0, 1.0],
            },
        },
        "sample_efficiency_summary.json": {},
        "ppo_summary.json": {
            "Hopper-v4/ac": bench_stats.summarize(records([10.0, 11.0, 12.0])),
            "Hopper-v4/stac_cond10b1": bench_stats.summarize(records([10.0, 11.0, 13.0])),
        },
        "offpolicy_summary.json": {
            "Hopper-v4/sac": bench_stats.summarize(records([10.0, 11.0, 12.0, 13.0, 14.0])),
            "Hopper-v4/stsac_actor": bench_stats.summarize(records([100.0])),
            "HalfCheetah-v4/sac": bench_stats.summarize(records([10.0, 11.0, 12.0])),
            "HalfCheetah-v4/stsac_actor": bench_stats.summarize(records([100.0, 101.0, 102.0])),
            "HalfCheetah-v4/stsac_critic": bench_stats.summarize(records([11.0, 12.0, 13.0])),
            "HalfCheetah-v4/td3": bench_stats.summarize(records([20.0, 21.0, 22.0])),
            "HalfCheetah-v4/sttd3_actor": bench_stats.summarize(records([1.0, 2.0, 3.0])),
            "Hopper-v4/sac_every50": bench_stats.summarize(records([10.0, 11.0, 12.0, 13.0, 14.0])),
            "Hopper-v4/stsac_actor_every50": bench_stats.summarize(records([20.0, 21.0, 22.0])),
            "Hopper-v4/stsac_critic_fishercond": bench_stats.summarize(records([20.0, 21.0, 22.0])),
            "Hopper-v4/stsac_critic_cgmin": bench_stats.summarize(records([11.0, 12.0, 13.0])),
            "Hopper-v4/stsac_actor_gn": bench_stats.summarize(records([1.0, 2.0, 3.0])),
        },
    }
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content))


def test_readme_table_gives_no_verdict_below_the_seed_floor(tmp_path, monkeypatch):
    """One seed far above the base is not a win: its bootstrap interval is a point. Each leader's row
    gets its own leader's cost (the critic's: its default's, Fisher + condition-λ, median timing over
    plain SAC's; the exact-Hessian rows the exact solve's), the TD3 row its twin's over plain TD3's,
    and a condition-λ or Gauss-Newton row its own variant's (PPO's is not timed)."""
    write_summaries(tmp_path)
    monkeypatch.setattr(bench_readme, "RESULTS", tmp_path)
    rows = {
        tuple(row.split(" | ")[:2]): row
        for row in bench_readme.table(bench_readme.DEFAULT_ROWS + bench_readme.VARIANT_ROWS)[2:]
    }
    assert rows[("| `stsac_mujoco.py` (actor leads)", "Hopper-v4")].endswith(
        "| 1 vs 5 | SAC 12 | 100 | 1.50× | no verdict yet |"
    )
    assert rows[("| `stsac_mujoco.py` (actor leads)", "HalfCheetah-v4")].endswith("| 1.50× | win / win |")
    assert rows[("| `stsac_mujoco.py` (critic leads)", "HalfCheetah-v4")].endswith("| 2.00× | tie / tie |")
    exact = ("| `stsac_mujoco.py` (critic leads, exact Hessian λ = 1, smallest-residual CG; every 50)", "Hopper-v4")
    assert rows[exact].endswith("| 3 vs 5 | SAC 12 | 12 | 1.25× | tie / tie |")
    assert rows[("| `stsac_mujoco.py` (algo=sttd3, actor leads)", "HalfCheetah-v4")].endswith(
        "| 3 vs 3 | TD3 21 | 2 | 1.75× | loss / loss |"
    )
    fisher = (
        "| `stsac_mujoco.py` (critic leads, Fisher + condition-λ κ = 100, smallest-residual CG; every 50)",
        "Hopper-v4",
    )
    assert rows[fisher].endswith("| 3 vs 5 | SAC 12 | 21 | 2.00× | win / win |")
    ppo = ("| `stppo_mujoco.py` (condition-λ κ = 10, bound ρ = 1)", "Hopper-v4")
    assert rows[ppo].endswith("| PPO 11 | 11 | not timed | tie / tie |")
    gauss_newton = ("| `stsac_mujoco.py` (actor leads, Gauss-Newton; every 50)", "Hopper-v4")
    assert rows[gauss_newton].endswith("| 3 vs 5 | SAC 12 | 2 | 2.50× | loss / loss |")
    every50 = ("| `stsac_mujoco.py` (actor leads; every 50)", "Hopper-v4")  # against the 50-step schedule's SAC
    assert rows[every50].endswith("| 3 vs 5 | SAC 12 | 21 | 1.50× | win / win |")
    assert len(rows) == 9


def test_readme_gets_the_defaults_and_results_every_configuration(tmp_path, monkeypatch):
    """The README's table holds the recipes at their defaults only; RESULTS.md's holds those and every
    other configuration measured; the text around either file's markers is kept."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    write_summaries(results)
    readme, results_md = tmp_path / "README.md", tmp_path / "benchmarks" / "RESULTS.md"
    for path in (readme, results_md):
        path.write_text(
            f"before {path.name}\n<!-- results:start -->\nold\n<!-- results:end -->\n"
            "<!-- configurations:start -->\nold\n<!-- configurations:end -->\nafter\n"
        )
    monkeypatch.setattr(bench_readme, "ROOT", tmp_path)
    monkeypatch.setattr(bench_readme, "RESULTS", results)
    bench_readme.main()
    default = "| `stsac_mujoco.py` (actor leads) | HalfCheetah-v4 |"
    variant = "| `stsac_mujoco.py` (critic leads, exact Hessian λ = 1, smallest-residual CG; every 50) | Hopper-v4 |"
    readme_section = readme.read_text().split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    assert default in readme_section and variant not in readme_section
    assert "benchmarks/RESULTS.md" in readme_section
    results_section = results_md.read_text().split("<!-- configurations:start -->")[1].split("<!-- configurations")[0]
    assert default in results_section and variant in results_section
    assert results_section.index(default) < results_section.index(variant)
    assert readme.read_text().startswith("before README.md") and results_md.read_text().endswith("after\n")
    assert "old" not in readme_section and "old" not in results_section


def test_readme_cost_of_condition_ppo_comes_from_its_own_overhead_run(tmp_path, monkeypatch):
    """The condition-λ PPO row's cost is ``ppo_overhead_condition.json``'s median ratio when that run
    exists, never the default PPO leader's."""
    files = {
        "bench_update.json": {"stac_over_ac": {"stac": 1.0, "stac_condition_k100": 1.1}},
        "ppo_overhead.json": {"median_ratio": 1.2},
        "bench_offpolicy_update.json": {
            "ratio_default": 1.5,
            "seconds_per_update": {
                name: [1.0]
                for name in (
                    bench_readme.PLAIN["sac"],
                    bench_readme.PLAIN["td3"],
                    bench_readme.CRITIC_LEADS_NAME,
                    bench_readme.TD3_DEFAULT_NAME,
                    bench_readme.ACTOR_CONDITION_NAME,
                    bench_readme.CRITIC_FISHER_NAME,
                    bench_readme.ACTOR_GAUSS_NEWTON_NAME,
                )
            },
        },
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    monkeypatch.setattr(bench_readme, "RESULTS", tmp_path)
    assert bench_readme.costs()["ppo_condition"] == "not timed"
    (tmp_path / "ppo_overhead_condition.json").write_text(json.dumps({"median_ratio": 1.456}))
    cost = bench_readme.costs()
    assert (cost["ppo"], cost["ppo_condition"]) == ("1.20×", "1.46×")
