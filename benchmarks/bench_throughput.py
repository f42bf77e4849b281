"""Is training fast? Rates measured in one run on one machine, compared as ratios.

    python benchmarks/bench_throughput.py [--env Hopper-v4] [--frames 20000] [--rounds 3] [overrides ...]

1. raw gymnasium ``env.step`` rate with random actions (the simulator's practical limit);
2. the recipe's collection rate: torchrl ``Collector`` over the recipe's env and 64×64 actor;
3. end-to-end training frames/s of the recipe with ``algo=stac`` and ``algo=ac`` (the recipe's
   defaults: frames_per_batch 4000, k = 80, 10 CG iterations), with the per-phase breakdown;
4. Stable-Baselines3 A2C training frames/s on the same env, when stable-baselines3 is installed
   (``pip install -e ".[bench]"``), with the paper's 64×64 tanh networks;
5. with envpool installed (``pip install -e ".[envpool]"``): 2. and STAC's 3. again on the envpool
   backend, in the recipe's layout (``env_backend=envpool``: 32 envs in 2 collector processes) and
   in a wide one (``num_envs=128 frames_per_batch=4096``: four times the envs per policy call).

The four measurements run back to back in each of ``--rounds`` rounds, so that each round's ratios
compare rates taken under the same load on a shared machine; the reported rates and ratios are
medians over rounds, and every round is kept in ``benchmarks/results/throughput.json``. Prints the
ratios against the targets (STAC ÷ SB3 A2C ≥ 2, collection ÷ raw gymnasium ≥ 0.7; envpool collection ÷
raw gymnasium ≥ 1.3, envpool STAC training ÷ gymnasium STAC training ≥ 1.3).
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


def raw_gym_rate(env_id: str, steps: int, seed: int = 0) -> float:
    import gymnasium

    env = gymnasium.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def recipe_config(env_id: str, overrides: list[str]):
    from recipe_schema import load_config

    name = "config_cartpole" if env_id.startswith("CartPole") else "config_mujoco"
    return load_config(name, [f"env={env_id}", *overrides])


def collection_rate(env_id: str, frames: int, overrides: list[str]) -> float:
    """The recipe's collector (its num_envs and collector_workers) with the recipe's actor."""
    from recipe_envs import make_collector, make_env, start_fresh_episodes
    from recipe_models import make_models

    cfg = recipe_config(env_id, overrides)
    actor, _ = make_models(make_env(env_id, 1), list(cfg.num_cells), "cpu")
    collector = make_collector(
        env_id,
        actor,
        frames_per_batch=cfg.frames_per_batch,
        total_frames=frames + cfg.frames_per_batch,
        num_envs=cfg.num_envs,
        workers=cfg.collector_workers,
        backend=cfg.env_backend,
    )
    start_fresh_episodes(collector, 0)
    iterator = iter(collector)
    next(iterator)  # warm-up batch, not timed
    start = time.perf_counter()
    collected = sum(b.numel() for b in iterator)
    rate = collected / (time.perf_counter() - start)
    collector.shutdown()
    return rate


def training_rate(env_id: str, algo: str, frames: int, overrides: list[str]) -> dict:
    from stac_mujoco import train

    budget = [f"algo={algo}", f"total_frames={frames}", "logger=none", f"eval_interval={10 * frames}"]
    cfg = recipe_config(env_id, [*budget, f"checkpoint_interval={10 * frames}", "eval_episodes=1", *overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(cfg, Path(run_dir))
    seconds = sum(summary["phase_seconds"].values())
    return {"frames_per_second": summary["frames"] / seconds, "phase_seconds": summary["phase_seconds"]}


def sb3_a2c_rate(env_id: str, frames: int) -> float | None:
    if importlib.util.find_spec("stable_baselines3") is None:
        return None
    from stable_baselines3 import A2C

    model = A2C(
        "MlpPolicy",
        env_id,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64], "activation_fn": torch.nn.Tanh},
    )
    start = time.perf_counter()
    model.learn(total_timesteps=frames)
    return frames / (time.perf_counter() - start)


# envpool layouts: the recipe's (32 envs in 2 collector processes), and 128 envs per batched step,
# which spreads TorchRL's per-step Python work (wrapper, transforms, policy call) over 4x the frames.
ENVPOOL_LAYOUTS = {
    "envpool": ["env_backend=envpool"],
    "envpool_128": ["env_backend=envpool", "num_envs=128", "frames_per_batch=4096"],
}


def measure_round(env_id: str, frames: int, overrides: list[str]) -> dict:
    """One round of the measurements: rates (frames/s), ratios and STAC/AC phase seconds.

    With envpool installed, collection and STAC training run again in each of ``ENVPOOL_LAYOUTS``
    and are compared with raw gymnasium and with STAC training on the gymnasium backend of the same
    round.
    """
    raw = raw_gym_rate(env_id, frames)
    collect = collection_rate(env_id, frames, overrides)
    training = {algo: training_rate(env_id, algo, frames, overrides) for algo in ("stac", "ac")}
    sb3 = sb3_a2c_rate(env_id, frames)
    stac = training["stac"]["frames_per_second"]
    rates = {
        "raw_gymnasium_steps_per_s": raw,
        "collection_frames_per_s": collect,
        "stac_training_frames_per_s": stac,
        "ac_training_frames_per_s": training["ac"]["frames_per_second"],
        "sb3_a2c_training_frames_per_s": sb3,
    }
    ratios = {
        "collection_over_raw": collect / raw,
        "stac_over_sb3_a2c": stac / sb3 if sb3 else None,
        "stac_over_ac": stac / training["ac"]["frames_per_second"],
    }
    envpool = importlib.util.find_spec("envpool") is not None
    for name, layout in ENVPOOL_LAYOUTS.items():
        pool_collect = pool_stac = None
        if envpool:
            pool_collect = collection_rate(env_id, frames, [*overrides, *layout])
            pool_stac = training_rate(env_id, "stac", frames, [*overrides, *layout])["frames_per_second"]
        rates[f"{name}_collection_frames_per_s"] = pool_collect
        rates[f"{name}_stac_training_frames_per_s"] = pool_stac
        ratios[f"{name}_collection_over_raw"] = pool_collect / raw if envpool else None
        ratios[f"{name}_training_over_gymnasium"] = pool_stac / stac if envpool else None
    phase_seconds = {algo: result["phase_seconds"] for algo, result in training.items()}
    return {"rates": rates, "ratios": ratios, "phase_seconds": phase_seconds}


def median_of(rounds: list[dict], field: str) -> dict:
    """Per-key median of ``round[field]`` over rounds (None stays None: SB3 not installed)."""
    keys = rounds[0][field]
    return {
        key: None if rounds[0][field][key] is None else statistics.median(r[field][key] for r in rounds) for key in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--frames", type=int, default=20_000, help="frames per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all measurements; medians reported")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. num_envs=8 collector_workers=1")
    args = parser.parse_args()
    if args.rounds < 1 or args.frames < 1:
        parser.error("--rounds and --frames must be positive")
    torch.manual_seed(0)
    rounds = []
    for index in range(args.rounds):
        rounds.append(measure_round(args.env, args.frames, args.overrides))
        round_ratios = ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1]["ratios"].items() if v is not None)
        print(f"round {index + 1}/{args.rounds}: {round_ratios}", flush=True)
    rates, ratios = median_of(rounds, "rates"), median_of(rounds, "ratios")
    phase_seconds = {algo: median_of([r["phase_seconds"] for r in rounds], algo) for algo in ("stac", "ac")}
    print(f"medians over {args.rounds} rounds of {args.frames} frames each")
    print(f"{'measurement':<34}{'frames/s':>12}")
    for name, value in rates.items():
        print(f"{name:<34}{'not installed' if value is None else f'{value:.0f}':>12}")
    for algo, phases in phase_seconds.items():
        print(f"{algo} phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    print(f"collection / raw gymnasium: {ratios['collection_over_raw']:.2f} (target >= 0.7)")
    if ratios["envpool_collection_over_raw"] is not None:
        for name, layout in ENVPOOL_LAYOUTS.items():
            print(f"{name} ({' '.join(layout)}):")
            print(f"  collection / raw gymnasium: {ratios[f'{name}_collection_over_raw']:.2f} (target >= 1.3)")
            print(
                f"  STAC training / gymnasium STAC training: {ratios[f'{name}_training_over_gymnasium']:.2f} "
                "(target >= 1.3)"
            )
    else:
        print("envpool rows: envpool not installed (pip install -e '.[envpool]')")
    if ratios["stac_over_sb3_a2c"] is not None:
        print(f"STAC training / SB3 A2C: {ratios['stac_over_sb3_a2c']:.2f} (target >= 2)")
    else:
        print('STAC training / SB3 A2C: stable-baselines3 not installed (pip install -e ".[bench]")')
    RESULTS.mkdir(parents=True, exist_ok=True)
    layout = recipe_config(args.env, args.overrides)
    record = {
        "env": args.env,
        "frames": args.frames,
        "overrides": args.overrides,
        "num_envs": int(layout.num_envs),
        "collector_workers": int(layout.collector_workers),
        "envpool_layouts": ENVPOOL_LAYOUTS,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "rates": rates,
        "ratios": ratios,
        "phase_seconds": phase_seconds,
        "rounds": rounds,
    }
    (RESULTS / "throughput.json").write_text(json.dumps(record, indent=2, default=float))
    replace_section(ROOT / "docs" / "benchmarks.md", "throughput", readme_text(record, args.rounds))
    print(f"wrote {RESULTS / 'throughput.json'} and the throughput lines of docs/benchmarks.md")


def readme_text(record: dict, rounds: int) -> str:
    """The docs' account of the last run: median rates and ratios (rounds in the JSON)."""
    rates = ", ".join(
        f"{name.removesuffix('_per_s').replace('_', ' ')} {value:.0f}/s"
        for name, value in record["rates"].items()
        if value is not None
    )
    ratios = ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in record["ratios"].items() if value)
    layouts = "; ".join(f"{name}: {' '.join(overrides)}" for name, overrides in record["envpool_layouts"].items())
    return (
        f"  {record['env']}, {record['frames']} frames per measurement, medians over {rounds} rounds, "
        f"{record['num_envs']} envs in {record['collector_workers']} collector process(es) on the gymnasium "
        f"backend (envpool rows: {layouts}), torch {record['torch']}: {rates}. Ratios: {ratios}."
    )


if __name__ == "__main__":
    main()
