"""The paper's Figure 1 with statistics: STAC vs AC on six settings, k ∈ {1, 80}, several seeds.

    python benchmarks/bench_sample_efficiency.py run --only cartpole_a --seeds 0-4 --jobs 2
    python benchmarks/bench_sample_efficiency.py run --only hopper --algos stac --k 80 --tag cond100 \
        regularization_decay=condition condition_number=100      # a tagged variant, kept apart
    python benchmarks/bench_sample_efficiency.py aggregate

``run`` trains the runs without a result file as Hydra multiruns of the recipe (``bench_sweep.py``:
``--launcher joblib`` runs ``--jobs`` at a time here; ``submitit_slurm`` or ``ray`` run the matrix on
a cluster) in ``benchmarks/runs/sample_efficiency/<run>/`` (a killed run resumes there), and writes
one JSON per finished run under ``benchmarks/results/sample_efficiency/<cell>/`` (config, seed,
evaluation curve, wall time); existing files are skipped, so the matrix fills up over sessions. ``--tag T``
with extra overrides makes a variant ``<algo>_T`` (its own files and runs, never pooled with the
untagged algorithm; the report compares it with STAC and AC at the same k). ``aggregate`` reads
every file and writes, per (cell, algo, k), the statistics of ``bench_stats.py`` (rliable: mean and IQM of
the final return and of the area under the evaluation curve with stratified-bootstrap CIs, and
STAC's probability of improvement over AC); a six-panel PNG in the style of the paper's Figure 1, an
aggregate-metrics PNG, and the Figure 1 section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from omegaconf import OmegaConf

from bench_report import replace_section
from bench_stats import (
    MIN_SEEDS_FOR_VERDICT,
    compare,
    curve_band,
    curves,
    enough_seeds,
    improvement_line,
    plot_aggregates,
    summarize,
    verdict,
)
from bench_sweep import Result, collect, eval_curve, finished, launch, log_tail, settings, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sample_efficiency"
RUNS = ROOT / "benchmarks" / "runs" / "sample_efficiency"

# cell → (recipe config, overrides, label); budgets sized for a 2-core CPU machine
CELLS = {
    "cartpole_a": (
        "config_cartpole",
        ["actor_lr=0.1", "critic_lr=0.01", "total_frames=200000"],
        "CartPole, αθ = 0.1, αw = 0.01",
    ),
    "cartpole_b": (
        "config_cartpole",
        ["actor_lr=0.05", "critic_lr=0.01", "total_frames=200000"],
        "CartPole, αθ = 0.05, αw = 0.01",
    ),
    "cartpole_c": (
        "config_cartpole",
        ["actor_lr=0.05", "critic_lr=0.001", "total_frames=200000"],
        "CartPole, αθ = 0.05, αw = 0.001",
    ),
    "reacher": ("config_mujoco", ["env=Reacher-v4", "total_frames=300000", "eval_interval=20000"], "Reacher-v4"),
    "hopper": ("config_mujoco", ["env=Hopper-v4", "total_frames=400000", "eval_interval=20000"], "Hopper-v4"),
    "walker": ("config_mujoco", ["env=Walker2d-v4", "total_frames=400000", "eval_interval=20000"], "Walker2d-v4"),
}
ALGOS = ("stac", "ac")
CRITIC_STEPS = (1, 80)


def result_path(cell: str, algo: str, k: int, seed: int) -> Path:
    return RESULTS / cell / f"{algo}_k{k}_seed{seed}.json"


def run_name(cell: str, algo: str, k: int, seed: int) -> str:
    return f"{cell}_{algo}_k{k}_seed{seed}"


def variant(algo: str, tag: str) -> str:
    """The name a run's group goes by: the algorithm, or ``<algo>_<tag>`` for a tagged variant."""
    return f"{algo}_{tag}" if tag else algo


def write_result(cell: str, algo: str, k: int, seed: int, overrides: list[str]) -> str:
    """The result file of a finished run (config, seed, overrides, evaluation curve, wall time of its last
    session); ``algo`` is the variant's name."""
    run_dir = RUNS / run_name(cell, algo, k, seed)
    curve = eval_curve(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    record = {
        "cell": cell,
        "algo": algo,
        "critic_steps": k,
        "seed": seed,
        "overrides": overrides,
        "wall_seconds": summary.get("wall_seconds", 0.0),
        "frames": config["total_frames"],
        "eval_curve": curve,
        "config": config,
    }
    path = result_path(cell, algo, k, seed)
    write_json(path, record)
    return f"{cell} {algo} k={k} seed={seed}: final eval {curve[-1][1]:.1f}"


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def command_run(args) -> None:
    """The missing runs as Hydra multiruns (``bench_sweep.py``; one per recipe preset), then their result files."""
    cells = args.only.split(",") if args.only else list(CELLS)
    unknown = sorted(set(cells) - set(CELLS))
    if unknown:
        sys.exit(f"error: unknown cells {unknown}; choose from {list(CELLS)}")
    recipe_overrides = [o for o in args.overrides if not o.startswith("hydra.")]
    if recipe_overrides and not args.tag:
        sys.exit(f"error: {recipe_overrides} change the experiment: name the variant with --tag (kept apart)")
    jobs = [
        (cell, algo, k, seed)
        for seed in parse_seeds(args.seeds)
        for cell in cells
        for k in (int(v) for v in args.k.split(","))
        for algo in args.algos.split(",")
        if not result_path(cell, variant(algo, args.tag), k, seed).exists()
    ]
    print(f"{len(jobs)} runs to do on the {args.launcher} launcher ({args.jobs} at a time with joblib)", flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)

    def name(cell: str, algo: str, k: int, seed: int) -> str:
        return run_name(cell, variant(algo, args.tag), k, seed)

    results = {
        name(cell, algo, k, seed): Result(
            result_path(cell, variant(algo, args.tag), k, seed),
            RUNS / name(cell, algo, k, seed),
            settings(CELLS[cell][1])["total_frames"],
            partial(write_result, cell, variant(algo, args.tag), k, seed, recipe_overrides),
        )
        for cell, algo, k, seed in jobs
    }
    failed = False
    for preset in sorted({CELLS[cell][0] for cell, *_ in jobs}):
        runs = {
            name(cell, algo, k, seed): {
                **settings(CELLS[cell][1]),
                "algo": algo,
                "critic_steps": k,
                "seed": seed,
            }
            for cell, algo, k, seed in jobs
            if CELLS[cell][0] == preset
        }
        # one process per run (collector_workers=1): the launcher's parallel jobs use the cores
        common = ["threads=1", "collector_workers=1", "logger=csv", *args.overrides]
        result = launch(
            "stac_mujoco.py", preset, runs, RUNS, common, args.launcher, args.jobs, partial(collect, results)
        )
        failed |= result.returncode != 0
    for name in collect(results, finished):
        print(f"{name}: not finished (run again to resume it)", flush=True)
    if failed:
        sys.exit(f"error: a sweep failed; the end of {RUNS / 'sweep.log'}:\n{log_tail(RUNS)}")


def load_runs() -> dict[tuple[str, str, int], list[dict]]:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for path in sorted(RESULTS.glob("*/*.json")):
        record = json.loads(path.read_text())
        groups.setdefault((record["cell"], record["algo"], record["critic_steps"]), []).append(record)
    return groups


def command_aggregate(args) -> None:
    groups = load_runs()
    if not groups:
        sys.exit(f"error: no result files under {RESULTS}; run `sample_efficiency.py run` first")
    summary = {f"{cell}/{algo}/k{k}": summarize(records) for (cell, algo, k), records in sorted(groups.items())}
    header = (
        f"{'cell':<12}{'algo':<6}{'k':>4}{'seeds':>7}{'frames':>9}{'final mean':>12}{'IQM':>9}{'95% CI':>20}{'AUC':>9}"
    )
    lines = [header]
    for key, s in summary.items():
        cell, algo, k = key.split("/")
        ci = f"[{s['final_ci'][0]:.1f}, {s['final_ci'][1]:.1f}]"
        lines.append(
            f"{cell:<12}{algo:<6}{k[1:]:>4}{s['seeds']:>7}{s['frames']:>9}{s['final_mean']:>12.1f}"
            f"{s['final_iqm']:>9.1f}{ci:>20}{s['auc_mean']:>9.1f}"
        )
    print("\n".join(lines))
    out = ROOT / "benchmarks" / "results"
    (out / "sample_efficiency_summary.json").write_text(json.dumps(summary, indent=1))
    plot(groups, out / "sample_efficiency.png")
    plot_aggregates(summary, list(CELLS), out / "sample_efficiency_aggregates.png")
    write_report(summary, groups, ROOT / "benchmarks" / "RESULTS.md")
    print(f"wrote {out / 'sample_efficiency_summary.json'}, sample_efficiency[_aggregates].png, benchmarks/RESULTS.md")


def plot(groups, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colors = {("stac", 80): "tab:blue", ("stac", 1): "tab:cyan", ("ac", 80): "tab:red", ("ac", 1): "tab:orange"}
    extra = ["tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:pink", "tab:gray"]
    for algo, k in sorted({(a, k) for _, a, k in groups} - set(colors)):  # tagged variants
        colors[(algo, k)] = extra[len(colors) % len(extra)]
    for ax, (cell, (_, _, label)) in zip(axes.flat, CELLS.items(), strict=True):
        for (algo, k), color in colors.items():
            records = groups.get((cell, algo, k))
            if not records:
                continue
            frames, values = curves(records)
            mean, band = curve_band(values)
            ax.plot(frames, mean, color=color, label=f"{algo.upper()} k={k} (n={len(records)})")
            ax.fill_between(frames, band[0], band[1], color=color, alpha=0.2)
        ax.set_title(label)
        ax.set_xlabel("frames")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        else:
            ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


SETUP_KEYS = (
    "total_frames",
    "frames_per_batch",
    "num_envs",
    "actor_lr",
    "critic_lr",
    "regularization",
    "hessian",
    "cg_iterations",
    "eval_interval",
    "eval_episodes",
)


def setup_rows(groups: dict) -> list[str]:
    """One row per cell with the settings its runs recorded (first run of the cell)."""
    rows = ["| cell | " + " | ".join(SETUP_KEYS) + " |", "|" + " --- |" * (len(SETUP_KEYS) + 1)]
    for cell in CELLS:
        records = [r for (c, _, _), rs in sorted(groups.items()) if c == cell for r in rs if "config" in r]
        if records:
            config = records[0]["config"]
            rows.append(f"| {cell} ({config['env']}) | " + " | ".join(str(config[key]) for key in SETUP_KEYS) + " |")
    return rows


def tally(outcomes: list[tuple[str, str]]) -> str:
    """'wins 2, ties 3, losses 1 (a: win; b: tie; ...)' from (label, outcome) pairs."""
    if not outcomes:
        return "no cell has enough seeds yet"
    plural = {"win": "wins", "tie": "ties", "loss": "losses"}
    counts = ", ".join(f"{plural[word]} {sum(o == word for _, o in outcomes)}" for word in plural)
    return f"{counts} ({'; '.join(f'{label}: {outcome}' for label, outcome in outcomes)})"


def claim_lines(summary: dict) -> list[str]:
    """The paper's three claims about Figure 1, checked cell by cell on final return and on AUC."""

    def ready(*keys: str) -> bool:
        return all(key in summary for key in keys) and enough_seeds(*(summary[key] for key in keys))

    def outcomes(pairs: list[tuple[str, str, str]], metric: str) -> str:
        return tally([(label, compare(summary[a], summary[b], metric)) for label, a, b in pairs if ready(a, b)])

    def best(metric: str) -> str:
        found = []
        for cell in CELLS:
            keys = [f"{cell}/{algo}/k{k}" for algo in ALGOS for k in CRITIC_STEPS]
            if not ready(*keys):
                continue
            top = max(keys, key=lambda key: summary[key][f"{metric}_mean"])
            clear = all(compare(summary[top], summary[key], metric) == "win" for key in keys if key != top)
            _, algo, k = top.split("/")
            found.append(f"{cell}: {algo.upper()} k={k[1:]}{' (CI clear of the other three)' if clear else ''}")
        return "; ".join(found) if found else "no cell has enough seeds yet"

    stac_vs_ac = [(f"{c} k={k}", f"{c}/stac/k{k}", f"{c}/ac/k{k}") for c in CELLS for k in CRITIC_STEPS]
    many_vs_one = [(f"{c} {a.upper()}", f"{c}/{a}/k80", f"{c}/{a}/k1") for c in CELLS for a in ALGOS]
    return [
        "Seed-level 95% stratified-bootstrap CIs of the mean (rliable); a win or a loss needs separated CIs, anything",
        "else is a tie. Final return is the last evaluation; AUC (mean evaluation return over training) is the",
        "sample-efficiency view of the curves.",
        "",
        '1. *"STAC has overall better performance than AC"*, STAC against AC:',
        f"   - final return: {outcomes(stac_vs_ac, 'final')};",
        f"   - AUC: {outcomes(stac_vs_ac, 'auc')}.",
        '2. *"80 steps unrolling overall has better performance than only one step"*, k = 80 against k = 1:',
        f"   - final return: {outcomes(many_vs_one, 'final')};",
        f"   - AUC: {outcomes(many_vs_one, 'auc')}.",
        '3. *"the overall best performance is achieved by STAC with multiple critic unrolling steps"*, best group:',
        f"   - by final return: {best('final')};",
        f"   - by AUC: {best('auc')}.",
    ]


def write_report(summary: dict, groups: dict, path: Path) -> None:
    rows = [
        "| cell | algo | k | seeds | frames | final mean | 95% CI | IQM | IQM 95% CI | AUC | AUC 95% CI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, s in summary.items():
        cell, algo, k = key.split("/")
        rows.append(
            f"| {cell} | {algo} | {k[1:]} | {s['seeds']} | {s['frames']} | {s['final_mean']:.1f} | "
            f"[{s['final_ci'][0]:.1f}, {s['final_ci'][1]:.1f}] | {s['final_iqm']:.1f} | "
            f"[{s['final_iqm_ci'][0]:.1f}, {s['final_iqm_ci'][1]:.1f}] | {s['auc_mean']:.1f} | "
            f"[{s['auc_ci'][0]:.1f}, {s['auc_ci'][1]:.1f}] |"
        )
    verdicts = []
    for cell in CELLS:
        for k in CRITIC_STEPS:
            stac, ac = summary.get(f"{cell}/stac/k{k}"), summary.get(f"{cell}/ac/k{k}")
            if stac and ac and not enough_seeds(stac, ac):
                verdicts.append(
                    f"- **{cell}, k = {k}** ({stac['seeds']} vs {ac['seeds']} seeds): too few seeds for a verdict "
                    f"(needs {MIN_SEEDS_FOR_VERDICT} each)"
                )
            elif stac and ac:
                verdicts.append(
                    f"- **{cell}, k = {k}** ({stac['seeds']} vs {ac['seeds']} seeds): final return "
                    f"{verdict(stac, ac)}; area under the curve {verdict(stac, ac, 'auc')}; "
                    f"{improvement_line(stac, ac, ('STAC', 'AC'))}"
                )
            else:
                verdicts.append(f"- **{cell}, k = {k}**: not run yet")
    for cell, algo, k in sorted(groups):
        if algo in ALGOS:
            continue
        for base in ALGOS:  # a tagged variant against STAC's and AC's defaults at the same k
            mine, theirs = summary[f"{cell}/{algo}/k{k}"], summary.get(f"{cell}/{base}/k{k}")
            label = f"- **{cell}, k = {k}, {algo} vs {base}**"
            if theirs is None or not enough_seeds(mine, theirs):
                verdicts.append(f"{label}: too few seeds for a verdict (needs {MIN_SEEDS_FOR_VERDICT} each)")
            else:
                final = verdict(mine, theirs, name=algo)
                verdicts.append(
                    f"{label} ({mine['seeds']} vs {theirs['seeds']} seeds): final return {final}; "
                    f"area under the curve {verdict(mine, theirs, 'auc', algo)}; "
                    f"{improvement_line(mine, theirs, (algo, base.upper()))}"
                )
    complete = all(
        summary.get(f"{c}/{a}/k{k}", {}).get("seeds", 0) >= 5 for c in CELLS for a in ALGOS for k in CRITIC_STEPS
    )
    text = [
        "# Sample efficiency: STAC vs AC (the paper's Figure 1)",
        "",
        "Generated by `python benchmarks/bench_sample_efficiency.py aggregate` from the per-run files in",
        "`benchmarks/results/sample_efficiency/`; do not edit the numbers by hand.",
        "",
        "**Matrix status:** "
        + (
            "complete (≥ 5 seeds in every cell)."
            if complete
            else "incomplete: cells below with fewer than 5 seeds, or missing, are still to run."
        ),
        "",
        "## Setup (as recorded by the runs)",
        "",
        "Both algorithms share every setting and differ only in the actor's gradient (AC: ∂J/∂θ; STAC: the total",
        "derivative). Evaluation is deterministic (the policy's mode) over `eval_episodes` episodes.",
        "",
        *setup_rows(groups),
        "",
        "## The paper's claims, checked",
        "",
        *claim_lines(summary),
        "",
        "## Statistics",
        "",
        "Computed with rliable (`benchmarks/bench_stats.py`, fixed bootstrap seed): final return = last deterministic",
        "evaluation; AUC = mean evaluation return over training; mean and IQM (interquartile mean over seeds)",
        "with 95% stratified-bootstrap percentile CIs; P(X > Y) = probability of improvement (a run of X",
        "beats a run of Y), with its CI. Aggregate metrics of the final return, per cell:",
        "",
        "![aggregate metrics](results/sample_efficiency_aggregates.png)",
        "",
        *rows,
        "",
        "## Verdict per cell (a win needs non-overlapping 95% bootstrap CIs)",
        "",
        *verdicts,
        "",
        "![learning curves](results/sample_efficiency.png)",
        "",
    ]
    replace_section(path, "figure1", "\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the missing runs of the selected cells")
    run.add_argument("--only", default="", help=f"comma-separated cells among {list(CELLS)}")
    run.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,5")
    run.add_argument("--algos", default="stac,ac")
    run.add_argument("--k", default="1,80", help="critic steps, comma-separated")
    run.add_argument("--jobs", type=int, default=2, help="parallel runs on the joblib launcher (one thread each)")
    run.add_argument("--launcher", default="joblib", help="Hydra launcher: joblib, submitit_slurm, ray, basic")
    run.add_argument("--tag", default="", help="name of a variant made by extra recipe overrides (<algo>_<tag>)")
    run.add_argument("overrides", nargs="*", help="extra recipe overrides (with --tag) or launcher ones (hydra.*)")
    sub.add_parser("aggregate", help="statistics, PNG and RESULTS.md from the result files")
    args = parser.parse_args()
    if args.command == "run":
        command_run(args)
    else:
        command_aggregate(args)


if __name__ == "__main__":
    main()
