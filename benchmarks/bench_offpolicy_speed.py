"""What does an env step of off-policy training cost in wall time? The recipe's schedules, its
Stackelberg SAC and SB3's SAC, all timed in one run.

    python benchmarks/bench_offpolicy_speed.py [--env Hopper-v4] [--frames 2000] [--rounds 3] [--threads 1]

Each round trains, back to back and from scratch, for ``--frames`` frames each (uniform warm-up
capped at 10% of them, as the recipe does, then one update per frame):

- ``recipes/stsac_mujoco.py algo=sac``: one update after every env step (the default);
- the same with ``frames_per_batch=50``: the earlier schedule, 50 steps then 50 updates;
- ``algo=stsac``: Stackelberg SAC at its defaults (the actor leads), one update per step;
- Stable-Baselines3's SAC with the recipe's settings on its per-step schedule (``bench_offpolicy.py
  sb3 --schedule recipe_settings``), when stable-baselines3 is installed.

Seconds per 1000 frames are wall time of the whole call (building, collection, updates, the replay
buffer, logging and one final evaluation episode), split for the recipe into its ``collect`` and
``update`` phases and the rest. Prints the medians over rounds and three ratios taken within each
round (per step ÷ 50-step, Stackelberg SAC ÷ SAC, SAC ÷ SB3's SAC); writes every round to
``benchmarks/results/offpolicy_speed.json``, a bar plot ``offpolicy_speed.png`` and the table into
``docs/recipes.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "recipes"))

from bench_report import replace_section  # noqa: E402

PER_STEP, EVERY_50, STACKELBERG, SB3 = (
    "SAC, per step",
    "SAC, every 50",
    "Stackelberg SAC, per step",
    "SB3 SAC, per step",
)
RECIPE_ARMS = {  # recipes/stsac_mujoco.py overrides of each timed arm
    PER_STEP: ["algo=sac"],
    EVERY_50: ["algo=sac", "frames_per_batch=50"],
    STACKELBERG: ["algo=stsac"],
}
RATIOS = {  # name: (numerator arm, denominator arm), both timed in the same round
    "per step / every 50": (PER_STEP, EVERY_50),
    "Stackelberg SAC / SAC": (STACKELBERG, PER_STEP),
    "SAC / SB3 SAC": (PER_STEP, SB3),
}


def recipe_timing(env_id: str, frames: int, overrides: list[str]) -> dict:
    """Seconds of one ``stsac_mujoco.train`` call, with its ``collect`` and ``update`` phases."""
    from recipe_schema import load_config
    from stsac_mujoco import train

    budget = [
        f"total_frames={frames}",
        "logger=none",
        f"eval_interval={10 * frames}",
        "eval_episodes=1",
        f"checkpoint_interval={10 * frames}",
    ]
    cfg = load_config("config_stsac", [f"env={env_id}", *overrides, *budget])
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        summary = train(cfg, Path(run_dir))
        seconds = time.perf_counter() - start
    phases = {name: summary["phase_seconds"][name] for name in ("collect", "update")}
    other = {"other": seconds - sum(phases.values())}
    return {"seconds": seconds, "updates": summary["updates"], "phase_seconds": phases | other}


def sb3_timing(env_id: str, frames: int) -> dict | None:
    """Seconds of building and training SB3's SAC with the recipe's settings; None without SB3."""
    if importlib.util.find_spec("stable_baselines3") is None:
        return None
    from stable_baselines3 import SAC

    from bench_offpolicy import SB3_SCHEDULES

    start = time.perf_counter()
    model = SAC("MlpPolicy", env_id, seed=0, device="cpu", **SB3_SCHEDULES["recipe_settings"][1](frames))
    model.learn(total_timesteps=frames)
    return {"seconds": time.perf_counter() - start, "updates": model._n_updates, "phase_seconds": {}}


def round_ratios(arms: dict[str, dict | None]) -> dict[str, float | None]:
    """Each of ``RATIOS`` within one round's ``arms`` (None where an arm is missing: SB3)."""
    return {
        name: arms[top]["seconds"] / arms[bottom]["seconds"] if arms[top] and arms[bottom] else None
        for name, (top, bottom) in RATIOS.items()
    }


def measure_round(env_id: str, frames: int) -> dict:
    """Every arm once: ``{"arms": {arm: timing}, "ratios": {ratio: value}}`` (None: SB3 missing)."""
    arms = {arm: recipe_timing(env_id, frames, overrides) for arm, overrides in RECIPE_ARMS.items()}
    arms[SB3] = sb3_timing(env_id, frames)
    return {"arms": arms, "ratios": round_ratios(arms)}


def summarize(rounds: list[dict], frames: int) -> dict:
    """Medians over rounds: seconds per 1000 frames per arm and phase, and each ratio."""
    per_thousand = 1000 / frames
    arms = {}
    for arm, timing in rounds[0]["arms"].items():
        if timing is None:
            arms[arm] = None
            continue
        arms[arm] = {
            "updates": timing["updates"],
            "seconds_per_1000_frames": statistics.median(r["arms"][arm]["seconds"] for r in rounds) * per_thousand,
            "phase_seconds_per_1000_frames": {
                phase: statistics.median(r["arms"][arm]["phase_seconds"][phase] for r in rounds) * per_thousand
                for phase in timing["phase_seconds"]
            },
        }
    ratios = {
        name: None if rounds[0]["ratios"][name] is None else statistics.median(r["ratios"][name] for r in rounds)
        for name in RATIOS
    }
    return {"arms": arms, "ratios": ratios}


def table(record: dict) -> str:
    """The markdown table and ratio lines of ``record`` (written into ``docs/recipes.md``)."""
    summary = record["summary"]
    lines = [
        "| arm | updates | s per 1000 frames (median) | collect | update | rest |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, timing in summary["arms"].items():
        if timing is None:
            lines.append(f'| {arm} | | not installed (`pip install -e ".[bench]"`) | | | |')
            continue
        phases = timing["phase_seconds_per_1000_frames"]
        cells = [f"{phases[p]:.1f}" if p in phases else "–" for p in ("collect", "update", "other")]
        total = f"{timing['seconds_per_1000_frames']:.1f}"
        lines.append(f"| {arm} | {timing['updates']} | {total} | " + " | ".join(cells) + " |")
    lines.append("")
    ratios = [f"{name}: {value:.2f}" for name, value in summary["ratios"].items() if value is not None]
    lines.append(
        f"Wall-time ratios (medians of the ratios within each round): {'; '.join(ratios)}. "
        f"{record['env']}, {record['rounds']} rounds of {record['frames']} frames per arm "
        f"({record['warmup']} of them warm-up), {record['threads']} thread(s), torch {record['torch']}."
    )
    return "\n".join(lines)


PLOT_PHASES = (
    ("collect", "C0", "collect"),
    ("update", "C1", "update"),
    ("other", "C2", "rest"),
    ("total", "C7", "SB3"),
)


def plot(record: dict, path: Path) -> None:
    """Stacked bars: seconds per 1000 frames per arm, by phase (SB3's as one bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = {arm: timing for arm, timing in record["summary"]["arms"].items() if timing is not None}
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for index, timing in enumerate(arms.values()):
        phases = timing["phase_seconds_per_1000_frames"] or {"total": timing["seconds_per_1000_frames"]}
        bottom = 0.0
        for phase, color, label in PLOT_PHASES:
            if phase in phases:
                first = index == 0 or phase == "total"  # one legend entry per phase
                axis.bar(index, phases[phase], bottom=bottom, color=color, label=label if first else None)
                bottom += phases[phase]
    axis.set_xticks(range(len(arms)), list(arms), fontsize=8)
    axis.set_ylabel("seconds per 1000 frames")
    axis.set_title(f"{record['env']}: off-policy training wall time (median of {record['rounds']} rounds)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--frames", type=int, default=2000, help="frames per arm and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every arm; medians reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as the benchmark runs use")
    args = parser.parse_args()
    if args.rounds < 1 or args.frames < 100:
        parser.error("--rounds must be positive and --frames at least 100")
    from recipe_schema import StsacConfig, offpolicy_warmup

    torch.set_num_threads(args.threads)
    rounds = []
    for index in range(args.rounds):
        rounds.append(measure_round(args.env, args.frames))
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1]["ratios"].items() if v is not None)
        print(f"round {index + 1}/{args.rounds}: {ratios}", flush=True)
    record = {
        "env": args.env,
        "frames": args.frames,
        "warmup": offpolicy_warmup(StsacConfig().init_random_frames, args.frames),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "recipe_arms": RECIPE_ARMS,
        "summary": summarize(rounds, args.frames),
        "per_round": rounds,
    }
    text = table(record)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "offpolicy_speed.json").write_text(json.dumps(record, indent=2))
    plot(record, RESULTS / "offpolicy_speed.png")
    replace_section(ROOT / "docs" / "recipes.md", "offpolicy_speed", text)
    print(f"wrote {RESULTS / 'offpolicy_speed.json'}, offpolicy_speed.png and the table in docs/recipes.md")


if __name__ == "__main__":
    main()
