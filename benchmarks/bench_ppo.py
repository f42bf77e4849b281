"""PPO vs Stackelberg-PPO on MuJoCo: TorchRL's PPO settings, with and without the correction.

    python benchmarks/bench_ppo.py run --envs Hopper-v4,Walker2d-v4 --algos ac,stac --seeds 0-2 --jobs 2
    python benchmarks/bench_ppo.py aggregate

``run`` trains the (env, algo, seed) runs that have no result file yet as one Hydra multirun of
``recipes/stppo_mujoco.py`` (``bench_sweep.py``; ``--launcher joblib`` runs ``--jobs`` at a
time here, ``submitit_slurm`` or ``ray`` on a cluster), one thread per run, in
``benchmarks/runs/ppo/<run>/`` (not committed). A run killed midway resumes from its last checkpoint
on the next ``run`` (``resume=auto``); a finished run writes ``benchmarks/results/ppo/<run>.json``
(config, seed, evaluation curve, wall time) and is skipped from then on. ``aggregate`` writes the
statistics (``bench_stats.py``: rliable's mean, IQM, CIs, probability of improvement),
``benchmarks/results/ppo[_aggregates].png``, the PPO section of ``benchmarks/RESULTS.md`` and the
results table in ``docs/recipes.md``.
``--tag`` and extra ``key=value`` overrides (e.g. ``--tag lam500 regularization=500``) give a
variant its own run names.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

from bench_report import replace_section
from bench_sample_efficiency import parse_seeds
from bench_stats import pair_verdicts, plot_aggregates, plot_curves, summarize, table_rows
from bench_sweep import Result, collect, eval_curve, finished, launch, log_tail, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ppo"
RUNS = ROOT / "benchmarks" / "runs" / "ppo"
TOTAL_FRAMES = 1_000_000
EVAL = ["eval_interval=50000", "eval_episodes=5"]


def run_name(env: str, algo: str, seed: int, tag: str) -> str:
    return f"{env}_{algo}{'_' + tag if tag else ''}_seed{seed}"


def run_settings(env: str, algo: str, seed: int, frames: int) -> dict:
    """One run's own settings (the rest is common to the sweep)."""
    return {"env": env, "algo": algo, "seed": seed, "total_frames": frames}


def write_result(name: str, job: dict, overrides: list[str]) -> str:
    """The result file of a finished run: config, seed, evaluation curve, times, correction ratios."""
    run_dir = RUNS / name
    curve = eval_curve(run_dir)
    timing = run_dir / "logs" / "scalars" / "time" / "implicit.csv"
    implicit_seconds = sum(float(v) for _, v in csv.reader(timing.open())) if timing.is_file() else 0.0
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    record = {
        **{key: job[key] for key in ("env", "algo", "tag", "seed")},
        "overrides": [f"{key}={job[key]}" for key in ("env", "algo", "seed", "total_frames")] + overrides,
        "wall_seconds_last_session": summary.get("wall_seconds", 0.0),
        "implicit_seconds": implicit_seconds,
        "eval_curve": curve,
        "config": (run_dir / "config.yaml").read_text(),
    }
    ratio = run_dir / "logs" / "scalars" / "implicit" / "correction_ratio.csv"
    if ratio.is_file():
        with open(ratio) as f:
            record["correction_ratio_curve"] = [(int(float(a)), float(b)) for a, b in csv.reader(f)]
    path = RESULTS / f"{name}.json"
    write_json(path, record)
    return f"{name}: final eval {curve[-1][1]:.1f}"


def command_run(args) -> None:
    """The missing runs as one Hydra multirun (``bench_sweep.py``); then a result file for each finished run."""
    runs = {
        run_name(env, algo, seed, args.tag): run_settings(env, algo, seed, args.frames)
        for seed in parse_seeds(args.seeds)
        for env in args.envs.split(",")
        for algo in args.algos.split(",")
        if not (RESULTS / f"{run_name(env, algo, seed, args.tag)}.json").exists()
    }
    print(f"{len(runs)} runs to do on the {args.launcher} launcher ({args.jobs} at a time with joblib)", flush=True)
    if not runs:
        return
    common = ["threads=1", "logger=csv", *EVAL, *args.overrides]
    RUNS.mkdir(parents=True, exist_ok=True)

    results = {
        name: Result(
            RESULTS / f"{name}.json",
            RUNS / name,
            args.frames,
            partial(write_result, name, {**job, "tag": args.tag}, list(args.overrides)),
        )
        for name, job in runs.items()
    }
    result = launch(
        "stppo_mujoco.py", "config_stppo", runs, RUNS, common, args.launcher, args.jobs, partial(collect, results)
    )
    for name in collect(results, finished):
        print(f"{name}: not finished (run again to resume it)", flush=True)
    if result.returncode != 0:
        sys.exit(f"error: the sweep failed; the end of {RUNS / 'sweep.log'}:\n{log_tail(RUNS)}")


def load_groups() -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        label = record["algo"] + (f"_{record['tag']}" if record["tag"] else "")
        record["wall_seconds"] = record["wall_seconds_last_session"]
        groups.setdefault(f"{record['env']}/{label}", []).append(record)
    return groups


def command_aggregate(args) -> None:
    groups = load_groups()
    if not groups:
        sys.exit(f"error: no result files under {RESULTS}; run `ppo.py run` first")
    summary = {key: summarize(records) for key, records in sorted(groups.items())}
    for key, records in groups.items():
        ratios = [value for r in records for _, value in r.get("correction_ratio_curve", [])]
        summary[key]["correction_ratio_median"] = float(np.median(ratios)) if ratios else None
    ratio = {
        "correction ratio": lambda s: (
            "–" if s["correction_ratio_median"] is None else f"{s['correction_ratio_median']:.3f}"
        )
    }
    rows = table_rows(summary, ratio)
    print("\n".join(rows))
    verdicts = pair_verdicts(summary, "ac", "stac", ("STAC", "PPO"))
    out = ROOT / "benchmarks" / "results"
    (out / "ppo_summary.json").write_text(json.dumps(summary, indent=1))
    plot_curves(groups, out / "ppo.png")
    plot_aggregates(summary, sorted({key.split("/")[0] for key in summary}), out / "ppo_aggregates.png")
    text = [
        "## PPO vs Stackelberg-PPO (issue: TorchRL's PPO as the leader)",
        "",
        "Generated by `python benchmarks/bench_ppo.py aggregate` from `benchmarks/results/ppo/`; do not edit by hand.",
        "`ac` is plain PPO (`recipes/stppo_mujoco.py algo=ac`: TorchRL's MuJoCo PPO settings, 2048 frames per batch,",
        "10 epochs of minibatch 64, Adam 3e-4 annealed, clip 0.2, GAE 0.95, observation normalisation);",
        "`stac` adds the Stackelberg correction (one solve per batch, an importance-weighted correction",
        f"per minibatch). {TOTAL_FRAMES:,} frames, deterministic evaluation every 50k frames over 5 episodes.",
        "Correction ratio: median over batches and seeds of ‖correction‖ / ‖PPO's actor gradient‖.",
        "",
        *rows,
        "",
        "Statistics with rliable (`benchmarks/bench_stats.py`, fixed bootstrap seed): mean and IQM over seeds with 95%",
        "stratified-bootstrap CIs; AUC = mean evaluation return over training; P(X > Y) = probability of improvement.",
        "",
        "![PPO aggregate metrics](results/ppo_aggregates.png)",
        "",
        "Verdicts (a win needs non-overlapping 95% bootstrap CIs of the mean):",
        "",
        *(verdicts or ["- no STAC/PPO pair with results yet"]),
        "",
        "![PPO learning curves](results/ppo.png)",
    ]
    replace_section(ROOT / "benchmarks" / "RESULTS.md", "ppo", "\n".join(text))
    replace_section(ROOT / "docs" / "recipes.md", "ppo_results", "\n".join([*rows, "", *verdicts]))
    print(f"wrote {out / 'ppo_summary.json'}, ppo.png and the PPO section of benchmarks/RESULTS.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train (or resume) the missing runs")
    run.add_argument("--envs", default="Hopper-v4,Walker2d-v4")
    run.add_argument("--algos", default="ac,stac")
    run.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,3")
    run.add_argument("--jobs", type=int, default=2, help="parallel runs on the joblib launcher (one thread each)")
    run.add_argument("--launcher", default="joblib", help="Hydra launcher: joblib, submitit_slurm, ray, basic")
    run.add_argument("--tag", default="", help="variant name for runs with extra overrides")
    run.add_argument("--frames", type=int, default=TOTAL_FRAMES, help="total frames per run")
    run.add_argument("overrides", nargs="*", help="extra recipe (or launcher) overrides, e.g. regularization=500")
    sub.add_parser("aggregate", help="statistics, PNG and the PPO section of RESULTS.md")
    args = parser.parse_args()
    command_run(args) if args.command == "run" else command_aggregate(args)


if __name__ == "__main__":
    main()
