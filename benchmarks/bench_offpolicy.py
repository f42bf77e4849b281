"""SAC vs Stackelberg SAC (the actor leading, or the critic), TD3 and DDPG vs their Stackelberg twins
(the actor leading) on MuJoCo; SB3's SAC as the reference.

    python benchmarks/bench_offpolicy.py run --envs Hopper-v4,HalfCheetah-v4 --seeds 0-4 --jobs 2
    python benchmarks/bench_offpolicy.py run --envs HalfCheetah-v4 --variants td3,sttd3_actor --seeds 0-2
    python benchmarks/bench_offpolicy.py sb3 --env Hopper-v4 --seed 0
    python benchmarks/bench_offpolicy.py aggregate

``run`` trains the (env, variant, seed) runs that have no result file yet as one Hydra multirun of
``recipes/stsac_mujoco.py`` (``bench_sweep.py``: ``--launcher joblib`` runs ``--jobs`` at a time here,
``submitit_slurm`` or ``ray`` on a cluster), one thread per run, in ``benchmarks/runs/offpolicy/<run>/``
(not committed); a run killed midway resumes from its last checkpoint (replay buffer included) on
the next ``run``. A finished run writes ``benchmarks/results/offpolicy/<run>.json`` (config,
evaluation curve, wall time, the Stackelberg diagnostics per logged row) within a minute, while the
sweep goes on, and is skipped from then on.
``sb3`` trains Stable-Baselines3's SAC with its defaults at the same budget and evaluation grid
(checkpointed with its replay buffer, resumable) into the same directory, as the reference that
plain ``sac`` must match; ``sb3 --schedule recipe`` trains it on the recipe's earlier schedule instead
(its capped warm-up, then 50 steps and 50 updates in turn, the ``every50`` groups), which separates the
schedule's effect from the implementation's; ``sb3 --schedule recipe_settings`` trains it with the
recipe's SAC settings (Tianshou's: Adam 1e-3, α = 0.2, 10k random steps) on SB3's per-step schedule,
which is Tianshou's published MuJoCo configuration in another implementation; ``sb3 --schedule
recipe_all`` trains it with the recipe's settings on that earlier schedule, so that only the
implementation differs from the recipe's SAC of the ``every50`` groups. ``aggregate`` writes the statistics
(``bench_stats.py``), curves, diagnostics plots, the off-policy section of ``benchmarks/RESULTS.md``
and the results table in ``docs/recipes.md``.
``--tag`` and extra ``key=value`` overrides give a variant its own run names (e.g. ``--tag lam01
regularization=0.1``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from functools import cache, partial
from pathlib import Path

from bench_report import replace_section
from bench_sample_efficiency import parse_seeds
from bench_stats import (
    MIN_SEEDS_FOR_VERDICT,
    pair_verdicts,
    plot_aggregates,
    plot_curves,
    summarize,
    table_rows,
)
from bench_sweep import Result, collect, eval_curve, finished, launch, log_tail, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "offpolicy"
RUNS = ROOT / "benchmarks" / "runs" / "offpolicy"
TOTAL_FRAMES = 100_000
EVAL = ["eval_interval=5000", "eval_episodes=5"]
VARIANTS = {  # name → the recipe's algo and leader
    "sac": {"algo": "sac", "leader": "actor"},
    "stsac_actor": {"algo": "stsac", "leader": "actor"},
    "stsac_critic": {"algo": "stsac", "leader": "critic"},
    "td3": {"algo": "td3", "leader": "actor"},
    "sttd3_actor": {"algo": "sttd3", "leader": "actor"},
    "ddpg": {"algo": "ddpg", "leader": "actor"},
    "stddpg_actor": {"algo": "stddpg", "leader": "actor"},
}
MATRIX = (  # the benchmark's matrix: (envs, variants, seeds); the last rows are the published-level anchors
    ("Hopper-v4,HalfCheetah-v4", "sac,stsac_actor,stsac_critic", "0-4"),
    ("HalfCheetah-v4", "td3,sttd3_actor", "0-2"),
    ("HalfCheetah-v4", "ddpg", "0-1"),
)
PAIRS = (("sac", "stsac", ("STSAC", "SAC")), ("td3", "sttd3", ("STTD3", "TD3")), ("ddpg", "stddpg", ("STDDPG", "DDPG")))
REFERENCE = ("sac", "sb3_sac", ("SB3", "SAC"))  # Stable-Baselines3's SAC (``sb3``) against the recipe's
PEAK_COLUMNS = {  # a run that peaks and then falls: late-training instability, not slow learning
    "peak mean": lambda s: f"{s['peak_mean']:.1f}",
    "peak − final": lambda s: f"{s['peak_drop_mean']:.1f}",
}
DIAGNOSTICS = (
    "correction_ratio",
    "cosine_partial_total",
    "nonpositive_curvature",
    "gauss_newton_fallback",
    "solver_iterations",
    "hessian_eigenvalue_min",  # extreme Ritz values of the follower's Hessian (only with eigenvalue_steps > 0)
    "hessian_eigenvalue_max",
    "regularization",  # λ of the solve (changes with regularization_decay=exp or condition)
)


def run_name(env: str, variant: str, seed: int, tag: str) -> str:
    return f"{env}_{variant}{'_' + tag if tag else ''}_seed{seed}"


def write_result(name: str, job: dict, overrides: list[str]) -> str:
    """The result file of a finished run: config, evaluation curve, wall time and diagnostics."""
    run_dir = RUNS / name
    curve = eval_curve(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    record = {
        **job,
        "overrides": overrides,
        "wall_seconds_last_session": summary.get("wall_seconds", 0.0),
        "eval_curve": curve,
        "config": (run_dir / "config.yaml").read_text(),
        "diagnostics": {},
    }
    for key in DIAGNOSTICS:
        path = run_dir / "logs" / "scalars" / "implicit" / f"{key}.csv"
        if path.is_file():
            with open(path) as f:
                record["diagnostics"][key] = [(int(float(a)), float(b)) for a, b in csv.reader(f)]
    write_json(RESULTS / f"{name}.json", record)
    return f"{name}: final eval {curve[-1][1]:.1f}"


def command_run(args) -> None:
    """The missing runs as one Hydra multirun (``bench_sweep.py``); then a result file for each finished run."""
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        sys.exit(f"error: unknown variants {unknown}; choose from {list(VARIANTS)}")
    jobs = {
        run_name(env, variant, seed, args.tag): {"env": env, "variant": variant, "tag": args.tag, "seed": seed}
        for seed in parse_seeds(args.seeds)
        for env in args.envs.split(",")
        for variant in args.variants.split(",")
        if not (RESULTS / f"{run_name(env, variant, seed, args.tag)}.json").exists()
    }
    runs = {name: {"env": job["env"], **VARIANTS[job["variant"]], "seed": job["seed"]} for name, job in jobs.items()}
    print(f"{len(runs)} runs to do on the {args.launcher} launcher ({args.jobs} at a time with joblib)", flush=True)
    if not runs:
        return
    common = [f"total_frames={args.frames}", "threads=1", "logger=csv", *EVAL, *args.overrides]
    RUNS.mkdir(parents=True, exist_ok=True)

    results = {
        name: Result(RESULTS / f"{name}.json", RUNS / name, args.frames, partial(write_result, name, job, common))
        for name, job in jobs.items()
    }
    result = launch(
        "stsac_mujoco.py", "config_stsac", runs, RUNS, common, args.launcher, args.jobs, partial(collect, results)
    )
    for name in collect(results, finished):
        print(f"{name}: not finished (run again to resume it)", flush=True)
    if result.returncode != 0:
        sys.exit(f"error: the sweep failed; the end of {RUNS / 'sweep.log'}:\n{log_tail(RUNS)}")


# --------------------------------------------------------------------------- SB3's SAC, the reference
EARLIER_STEPS = 50  # the recipe's schedule before one update per step: frames_per_batch=50 (groups every50)


def _recipe_schedule(frames: int) -> dict:
    """SB3 on the recipe's earlier schedule, the ``every50`` groups' (the ``sb3_sac_recipe_schedule`` and
    ``sb3_sac_recipe_all`` results): its capped warm-up, then 50 steps and 50 updates in turn."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from recipe_schema import StsacConfig, offpolicy_warmup

    cfg = StsacConfig()
    return {
        "learning_starts": offpolicy_warmup(cfg.init_random_frames, frames),
        "train_freq": (EARLIER_STEPS, "step"),
        "gradient_steps": int(cfg.utd_ratio * EARLIER_STEPS),
    }


def _recipe_settings(frames: int) -> dict:
    """SB3 with the recipe's SAC settings (Tianshou's: one Adam learning rate, α fixed, the capped
    warm-up) on its own schedule, one update after every step: Tianshou's ``mujoco_sac.py`` whole."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from omegaconf import OmegaConf

    from recipe_schema import StsacConfig, offpolicy_learning_rates, offpolicy_warmup

    cfg = OmegaConf.structured(StsacConfig(algo="sac"))
    actor_lr, critic_lr = offpolicy_learning_rates(cfg)
    if actor_lr != critic_lr or not cfg.fixed_alpha:
        raise ValueError("SB3's SAC has one learning rate and here a fixed α: the recipe's defaults no longer map")
    return {
        "learning_starts": offpolicy_warmup(cfg.init_random_frames, frames),
        "learning_rate": actor_lr,
        "ent_coef": cfg.alpha_init,
    }


# --schedule: (result variant, SB3's keyword arguments at a budget of ``frames``)
SB3_SCHEDULES = {
    "sb3": ("sb3_sac", lambda frames: {}),  # SB3's defaults: lr 3e-4, α learnt, 100 random steps, per step
    "recipe": ("sb3_sac_recipe_schedule", _recipe_schedule),  # SB3's settings, the recipe's earlier schedule
    "recipe_settings": ("sb3_sac_recipe_settings", _recipe_settings),  # the recipe's settings, SB3's schedule
    # the recipe's settings and earlier schedule: all that differs from the every50 SAC is the implementation
    "recipe_all": ("sb3_sac_recipe_all", lambda frames: {**_recipe_settings(frames), **_recipe_schedule(frames)}),
}


def command_sb3(args) -> None:
    """SB3's SAC (its defaults: 256×256, batch 256, lr 3e-4, 100 random steps) at the same budget,
    evaluated like the recipe (deterministic, ``eval_episodes`` episodes every ``eval_interval``)."""
    import gymnasium
    import numpy as np
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    variant, sb3_options = SB3_SCHEDULES[args.schedule]
    name = run_name(args.env, variant, args.seed, "")
    if (RESULTS / f"{name}.json").exists():
        print(f"{name}: done already")
        return
    torch.set_num_threads(1)  # as the recipe's runs
    run_dir = RUNS / name
    run_dir.mkdir(parents=True, exist_ok=True)
    interval, episodes = 5000, 5
    curve_path, model_path, buffer_path = run_dir / "eval.json", run_dir / "model.zip", run_dir / "replay.pkl"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    env = gymnasium.make(args.env)
    if model_path.is_file() and buffer_path.is_file():
        model = SAC.load(model_path, env=env, device="cpu")
        model.load_replay_buffer(buffer_path)
    else:
        model = SAC("MlpPolicy", env, seed=args.seed, device="cpu", **sb3_options(args.frames))
    eval_env = gymnasium.make(args.env)

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % interval == 0:
                returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=True)
                curve.append((self.num_timesteps, float(np.mean(returns))))
                model.save(model_path)  # checkpoint: model, optimizers, counters; then the buffer
                model.save_replay_buffer(buffer_path)
                write_json(curve_path, curve)  # the curve last: it never runs ahead of the checkpoint
                print(f"{name}: {self.num_timesteps} steps, eval {curve[-1][1]:.1f}", flush=True)
            return True

    remaining = args.frames - model.num_timesteps
    model.learn(total_timesteps=remaining, callback=Evaluate(), reset_num_timesteps=False)
    record = {"env": args.env, "variant": variant, "tag": "", "seed": args.seed, "eval_curve": curve}
    write_json(RESULTS / f"{name}.json", record)
    print(f"{name}: final eval {curve[-1][1]:.1f}")


# --------------------------------------------------------------------------- retag
def effective_config(config) -> dict:
    """The config a run trains with: today's schema defaults under ``config`` (keys added since
    default to the behaviour before them), null learning rates resolved to the base's own, the
    warm-up capped at 10% of the run; without the seed and the keys that only schedule the run."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from omegaconf import OmegaConf

    from recipe_schema import (
        RESUME_MAY_CHANGE,
        StsacConfig,
        offpolicy_learning_rates,
        offpolicy_warmup,
        with_offpolicy_curvature,
    )

    cfg = with_offpolicy_curvature(OmegaConf.merge(OmegaConf.structured(StsacConfig), config))
    values = OmegaConf.to_container(cfg)
    values["actor_lr"], values["critic_lr"] = offpolicy_learning_rates(cfg)
    values["init_random_frames"] = offpolicy_warmup(cfg.init_random_frames, cfg.total_frames)
    return {key: value for key, value in values.items() if key not in RESUME_MAY_CHANGE | {"seed"}}


def differs_from_default(record: dict) -> set[str]:
    """The keys in which a result file's effective config differs from a fresh ``run`` of its variant
    under today's defaults."""
    from omegaconf import OmegaConf

    ran = effective_config(OmegaConf.create(record["config"]))
    fresh = effective_config({"env": record["env"], **VARIANTS[record["variant"]], "total_frames": TOTAL_FRAMES})
    return {key for key in ran.keys() | fresh.keys() if ran.get(key) != fresh.get(key)}


def command_retag(args) -> None:
    """Move the result files of ``--variants`` tagged ``--from-tag`` to ``--to-tag``, numbers untouched
    (``retagged_from`` keeps the first tag). Into the untagged default group only when each run's
    effective config equals that of a fresh ``run`` under today's defaults."""
    moves = []
    for variant in args.variants.split(","):
        for path in sorted(RESULTS.glob(f"*_{variant}{'_' + args.from_tag if args.from_tag else ''}_seed*.json")):
            record = json.loads(path.read_text())
            if record["variant"] != variant or record["tag"] != args.from_tag:
                continue
            target = RESULTS / f"{run_name(record['env'], variant, record['seed'], args.to_tag)}.json"
            if target.exists():
                sys.exit(f"error: {target.name} exists; nothing retagged")
            if not args.to_tag:
                if variant not in VARIANTS:
                    sys.exit(f"error: only the recipe's variants can join the default group, not {variant}")
                differs = sorted(differs_from_default(record))
                if differs:
                    sys.exit(f"error: {path.name} differs from today's defaults in {differs}; nothing retagged")
            moves.append((path, target, record))
    for path, target, record in moves:
        record = {**record, "tag": args.to_tag, "retagged_from": record.get("retagged_from", record["tag"])}
        write_json(target, record)
        path.unlink()
        print(f"{path.name} -> {target.name}")
    if not moves:
        print("nothing to retag")


# --------------------------------------------------------------------------- report
def load_groups() -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        label = record["variant"] + (f"_{record['tag']}" if record["tag"] else "")
        groups.setdefault(f"{record['env']}/{label}", []).append(record)
    return groups


def matrix_progress() -> str:
    """How many of the matrix's runs have result files, and which are missing."""
    planned = [
        run_name(env, variant, seed, "")
        for envs, variants, seeds in MATRIX
        for env in envs.split(",")
        for variant in variants.split(",")
        for seed in parse_seeds(seeds)
    ]
    missing = [name for name in planned if not (RESULTS / f"{name}.json").exists()]
    line = f"Matrix: {len(planned) - len(missing)} of {len(planned)} runs have result files"
    return f"{line}; still running or to run: {', '.join(missing)}." if missing else f"{line}."


def tagged_variants(groups: dict[str, list[dict]]) -> list[str]:
    """Markdown items: each tagged group (``<variant>_<tag>``) and the recipe overrides that set it apart
    (SB3's runs have none; a group without overrides ran on the defaults of its time)."""
    shared = ("total_frames=", "threads=", "logger=", "eval_interval=", "eval_episodes=", "checkpoint_interval=")
    lines = []
    for key, records in sorted(groups.items()):
        if records[0]["tag"]:
            extra = [o for o in records[0].get("overrides", []) if not o.startswith(shared)]
            what = f"`{' '.join(extra)}`" if extra else "no overrides"
            lines.append(f"- `{key}` ({len(records)} seed(s)): {what}")
    return lines


def same_tag_verdicts(groups: dict[str, list[dict]], summary: dict[str, dict]) -> list[str]:
    """The verdict lines of each Stackelberg group against its base with the same tag (``stsac_actor``
    against ``sac``, ``stsac_actor_prefix`` against ``sac_prefix``), then of each SB3 reference group
    against the recipe's SAC likewise: runs of different defaults never meet. A tagged try without a
    base of its tag gets no verdict."""
    lines = []
    for tag in sorted({records[0]["tag"] for records in groups.values()}):
        same = {key: summary[key] for key, records in groups.items() if records[0]["tag"] == tag}
        suffix = f"_{tag}" if tag else ""
        for base, twin, (twin_name, base_name) in (*PAIRS, REFERENCE):
            lines += pair_verdicts(same, base + suffix, twin, (twin_name, base_name + (f" ({tag})" if tag else "")))
    return lines


# the keys only the Stackelberg correction reads (the follower solve and how often it runs)
SOLVE_KEYS = frozenset(
    {
        "regularization", "regularization_decay", "regularization_half_life", "regularization_floor",
        "condition_number", "eigenvalue_every", "correction_max_ratio", "cg_iterations", "hessian",
        "curvature_fallback", "eigenvalue_steps", "correction_every",
    }
)  # fmt: skip


def base_settings(record: dict) -> str:
    """A run's effective config without the seed, who leads (``algo``, ``leader``) and the follower
    solve (``SOLVE_KEYS``), as sorted JSON: what a Stackelberg run shares with the base it is judged
    against."""
    return _base_settings(record["config"])


@cache
def _base_settings(config: str) -> str:
    from omegaconf import OmegaConf

    ran = effective_config(OmegaConf.create(config))
    return json.dumps({k: v for k, v in ran.items() if k not in SOLVE_KEYS | {"algo", "leader"}}, sort_keys=True)


def solve_try_base(groups: dict[str, list[dict]], key: str) -> str | None:
    """The base group that the tagged Stackelberg group ``key`` trained, if not its own tag's: the group
    of its base variant on the same env, untagged first, whose runs share every setting with it but the
    follower solve (e.g. ``stsac_critic_fishercond``, ``hessian=fisher regularization_decay=condition``,
    meets ``sac``). None for a group that changed more than the solve, or for an untagged one."""
    records = groups[key]
    variant, tag = records[0].get("variant"), records[0]["tag"]
    if not tag or variant not in VARIANTS or not variant.startswith("st") or "config" not in records[0]:
        return None
    settings = {base_settings(record) for record in records}
    if len(settings) != 1:  # its own runs differ: no single base trained them all
        return None
    env = key.split("/")[0]
    base = next(pair[0] for pair in PAIRS if variant.startswith(pair[1]))
    for other, base_records in sorted(groups.items()):  # "<env>/sac" sorts before "<env>/sac_<tag>"
        same_base = other.split("/")[0] == env and base_records[0].get("variant") == base
        if same_base and base_records[0]["tag"] != tag and all("config" in r for r in base_records):
            if {base_settings(record) for record in base_records} == settings:
                return other
    return None


def solve_try_verdicts(groups: dict[str, list[dict]], summary: dict[str, dict]) -> list[str]:
    """The verdict lines of each solve try against the base it trained (:func:`solve_try_base`)."""
    lines = []
    for key, records in sorted(groups.items()):
        base_key = solve_try_base(groups, key)
        if base_key is not None:
            base, twin, (twin_name, base_name) = next(p for p in PAIRS if records[0]["variant"].startswith(p[1]))
            base_tag = groups[base_key][0]["tag"]
            names = (twin_name, base_name + (f" ({base_tag})" if base_tag else ""))
            both = {key: summary[key], f"{key.split('/')[0]}/{base}": summary[base_key]}  # as pair_verdicts looks it up
            lines += pair_verdicts(both, base, twin, names)
    return lines


def per_seed_tables(groups: dict[str, list[dict]], summary: dict[str, dict]) -> list[str]:
    """Markdown, per env and base group: final / AUC of every seed of the base, its Stackelberg twins of
    the same tag and the solve tries that trained it with at least ``MIN_SEEDS_FOR_VERDICT`` seeds,
    side by side on the same seeds."""
    lines = []
    for base_key, base_records in sorted(groups.items()):
        env, tag = base_key.split("/")[0], base_records[0]["tag"]
        pair = next((p for p in PAIRS if base_records[0].get("variant") == p[0]), None)
        if pair is None:
            continue
        base, twin, (_, base_name) = pair
        suffix = f"_{tag}" if tag else ""
        keys = [base_key, *(f"{env}/{twin}_{leader}{suffix}" for leader in ("actor", "critic"))]
        keys = [key for key in keys if key in groups]
        keys += [
            key
            for key, records in sorted(groups.items())
            if len(records) >= MIN_SEEDS_FOR_VERDICT and solve_try_base(groups, key) == base_key
        ]
        if len(keys) < 2:
            continue
        cells = {
            key: {
                record["seed"]: f"{final:.0f} / {auc:.0f}"
                for record, final, auc in zip(
                    groups[key], summary[key]["final_values"], summary[key]["auc_values"], strict=True
                )
            }
            for key in keys
        }
        seeds = sorted({seed for column in cells.values() for seed in column})
        lines += [
            f"{env}, {base_name}{f' ({tag})' if tag else ''} and its Stackelberg twin, final / AUC per seed:",
            "",
            "| seed | " + " | ".join(f"`{key.split('/')[1]}`" for key in keys) + " |",
            "| --- |" + " --- |" * len(keys),
            *(f"| {seed} | " + " | ".join(cells[key].get(seed, "–") for key in keys) + " |" for seed in seeds),
            "",
        ]
    return lines


def command_aggregate(args) -> None:
    groups = load_groups()
    if not groups:
        sys.exit(f"error: no result files under {RESULTS}; run `offpolicy.py run` first")
    summary = {key: summarize(records) for key, records in sorted(groups.items())}
    rows = table_rows(summary, PEAK_COLUMNS)
    print("\n".join(rows))
    verdicts = same_tag_verdicts(groups, summary) + solve_try_verdicts(groups, summary)
    verdicts = verdicts or ["- no Stackelberg/base pair with results yet"]
    progress = matrix_progress()
    out = ROOT / "benchmarks" / "results"
    (out / "offpolicy_summary.json").write_text(json.dumps(summary, indent=1))
    envs = sorted({key.split("/")[0] for key in summary})
    plot_curves(groups, out / "offpolicy.png")
    plot_aggregates(summary, envs, out / "offpolicy_aggregates.png")
    plot_diagnostics(groups, out / "offpolicy_diagnostics.png")
    text = [
        "## SAC vs Stackelberg SAC (issue: off-policy Stackelberg, either player leading; TD3 and DDPG)",
        "",
        "Generated by `python benchmarks/bench_offpolicy.py aggregate` from `benchmarks/results/offpolicy/`;",
        "do not edit by hand.",
        "`sac`: the recipe's SAC (`recipes/stsac_mujoco.py algo=sac`: Tianshou's MuJoCo settings, 256×256,",
        "batch 256, Adam 1e-3, α = 0.2, 10k random steps, then one update after every step); groups tagged",
        "`every50` (and the solve tries they judge) ran on the earlier schedule, 50 steps and 50 updates in turn;",
        "`stsac_actor` / `stsac_critic`: Stackelberg SAC with that player leading (the recipe's defaults; the",
        "critic leader's is the policy's Fisher information with condition-λ); `stsac_actor_cgmin` /",
        "`sttd3_actor_cgmin`: the actor leader's default under CG's earlier smallest-residual rule (CG now",
        "returns its last iterate);",
        "`stsac_critic_cgmin` / `stsac_critic_cglast`: the critic leader's earlier default, the exact Hessian",
        "with λ = 1, under the smallest-residual and last-iterate rules;",
        "`td3` / `sttd3_actor`, `ddpg` / `stddpg_actor`: the recipe's TD3 and DDPG and their Stackelberg twins",
        "(the actor leading); `sb3_sac`: Stable-Baselines3's SAC at the same budget (its defaults: 100 random",
        "steps, then one update after every step); `sb3_sac_recipe_settings`: SB3's SAC with the recipe's",
        "settings (Tianshou's), one update after every step; `sb3_sac_recipe_all`: the recipe's settings on",
        "the recipe's earlier schedule (50 and 50). Deterministic evaluation every 5k frames over 5 episodes.",
        "Statistics with rliable (`benchmarks/bench_stats.py`). Groups tagged `prefix` ran on the recipe's",
        "earlier defaults (TorchRL's SAC settings: Adam 3e-4, α learnt from 1.0, 1000-step blocks;",
        "`sb3_sac_recipe_schedule_prefix`: SB3's SAC on that schedule); other tagged groups are tries outside",
        "the matrix, the defaults of their time plus these overrides. A tagged Stackelberg group that shares",
        "every setting with a base group but the follower solve (λ, its decay, κ, the bound, the curvature)",
        "trained that base, and is also judged against it (the untagged one first):",
        "",
        *(tagged_variants(groups) or ["- none"]),
        "",
        progress,
        "",
        *rows,
        "",
        "![off-policy learning curves](results/offpolicy.png)",
        "",
        "![off-policy aggregate metrics](results/offpolicy_aggregates.png)",
        "",
        "Verdicts (a win needs non-overlapping 95% bootstrap CIs of the mean):",
        "",
        *verdicts,
        "",
        *per_seed_tables(groups, summary),
        "Stackelberg diagnostics per logged row (means over its updates: every `log_interval` = 1000 frames per step,",
        "every batch on the 50-step schedule), mean over seeds: ![diagnostics](results/offpolicy_diagnostics.png)",
        "",
        *diagnostics_table(groups),
    ]
    replace_section(ROOT / "benchmarks" / "RESULTS.md", "offpolicy", "\n".join(text))
    readme = [progress, "", *rows, "", *verdicts]
    replace_section(ROOT / "docs" / "recipes.md", "offpolicy_results", "\n".join(readme))
    print(f"wrote {out / 'offpolicy_summary.json'}, offpolicy*.png and the off-policy section of RESULTS.md")


def solved_regularization(record: dict) -> list[tuple[int, float]]:
    """``(frames, λ)`` per logged row: the mean λ of the row's solves. Under ``regularization_decay=condition``
    it is the rule applied to the row's logged mean μ_min, μ_max, max(floor, (μ_max − κ μ_min)/(κ − 1)),
    exact while the rule is above the floor (λ is linear in μ there): result files written before
    commit ac7d683 averaged the logged λ with the plain updates' floor (¼ of it at correction_every=4)."""
    from omegaconf import OmegaConf

    from torchrl_stac.follower_solver import condition_regularization

    diagnostics = record["diagnostics"]
    config = OmegaConf.create(record.get("config", "{}"))
    if config.get("regularization_decay") != "condition" or not diagnostics.get("hessian_eigenvalue_max"):
        return diagnostics.get("regularization", [])
    kappa, floor = config.condition_number, config.get("regularization_floor", 0.0)
    return [
        (frames, condition_regularization(low, high, kappa, floor))
        for (frames, low), (_, high) in zip(
            diagnostics["hessian_eigenvalue_min"], diagnostics["hessian_eigenvalue_max"], strict=True
        )
    ]


def row_diagnostics(record: dict) -> dict[str, list[tuple[int, float]]]:
    """The record's diagnostics per logged row, λ as :func:`solved_regularization` gives it."""
    diagnostics = dict(record.get("diagnostics", {}))
    if diagnostics.get("regularization"):
        diagnostics["regularization"] = solved_regularization(record)
    return diagnostics


def diagnostics_table(groups: dict[str, list[dict]]) -> list[str]:
    """Markdown rows: each Stackelberg group's diagnostics over all its runs' rows, and over the
    second half of training (a row's values are means over its corrected updates, λ as
    :func:`solved_regularization` gives it; the curvature flag is the final solve's, so after a
    Gauss-Newton re-solve it is that solve's)."""
    import numpy as np

    rows = [
        "| run group | seeds | frames | median correction ratio | median cosine(partial, total) "
        "| corrections meeting non-positive curvature | corrections re-solved with Gauss-Newton | mean CG iterations "
        "| median follower-Hessian eigenvalue, min / max | median λ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, records in sorted(groups.items()):
        series = [row_diagnostics(r) for r in records if r.get("diagnostics", {}).get("correction_ratio")]
        if not series:
            continue
        last = max(frames for d in series for frames, _ in d["correction_ratio"])
        for label, start in (("all", 0), ("second half", last // 2)):
            pooled = {name: [v for d in series for f, v in d.get(name, []) if f > start] for name in DIAGNOSTICS}
            low, high = pooled["hessian_eigenvalue_min"], pooled["hessian_eigenvalue_max"]
            cells = [
                f"{np.median(pooled['correction_ratio']):.3g}",
                f"{np.median(pooled['cosine_partial_total']):.3f}",
                f"{np.mean(pooled['nonpositive_curvature']):.2f}",
                f"{np.mean(pooled['gauss_newton_fallback']):.2f}" if pooled["gauss_newton_fallback"] else "not logged",
                f"{np.mean(pooled['solver_iterations']):.2f}",
                f"{np.median(low):.3g} / {np.median(high):.3g}" if low else "not logged",
                f"{np.median(pooled['regularization']):.3g}" if pooled["regularization"] else "not logged",
            ]
            rows.append(f"| {key} | {len(series)} | {label} | " + " | ".join(cells) + " |")
    return rows if len(rows) > 2 else []


def plot_diagnostics(groups: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(4.2 * len(DIAGNOSTICS), 3.4))
    for ax, name in zip(axes, DIAGNOSTICS, strict=True):
        for key, records in sorted(groups.items()):
            series = [d[name] for d in map(row_diagnostics, records) if d.get(name)]
            if not series:
                continue
            length = min(len(s) for s in series)
            frames = [f for f, _ in series[0][:length]]
            ax.plot(frames, np.mean([[v for _, v in s[:length]] for s in series], axis=0), label=key, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("frames")
        if name == "correction_ratio":
            ax.set_yscale("log")
        if name.startswith("hessian_eigenvalue"):
            ax.set_yscale("symlog")
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train (or resume) the missing runs")
    run.add_argument("--envs", default=MATRIX[0][0])
    run.add_argument("--variants", default=MATRIX[0][1], help=f"among {list(VARIANTS)}")
    run.add_argument("--seeds", default=MATRIX[0][2], help="e.g. 0-4 or 0,3")
    run.add_argument("--jobs", type=int, default=2, help="parallel runs on the joblib launcher (one thread each)")
    run.add_argument("--launcher", default="joblib", help="Hydra launcher: joblib, submitit_slurm, ray, basic")
    run.add_argument("--tag", default="", help="variant name for runs with extra overrides")
    run.add_argument("--frames", type=int, default=TOTAL_FRAMES, help="total frames per run")
    run.add_argument("overrides", nargs="*", help="extra recipe (or launcher) overrides, e.g. regularization=0.1")
    sb3 = sub.add_parser("sb3", help="SB3's SAC at the same budget (resumable)")
    sb3.add_argument("--env", default="Hopper-v4")
    sb3.add_argument("--seed", type=int, default=0)
    sb3.add_argument("--frames", type=int, default=TOTAL_FRAMES)
    sb3.add_argument(
        "--schedule", default="sb3", choices=list(SB3_SCHEDULES), help="SB3's or the recipe's schedule and settings"
    )
    retag = sub.add_parser("retag", help="move result files to another tag (e.g. runs before a change of defaults)")
    sb3_variants = [variant for variant, _ in SB3_SCHEDULES.values()]
    retag.add_argument("--variants", required=True, help=f"among {list(VARIANTS)} and {sb3_variants}")
    retag.add_argument("--from-tag", default="")
    retag.add_argument("--to-tag", required=True, help='"" (the default group) checks the configs against the defaults')
    sub.add_parser("aggregate", help="statistics, PNGs and the off-policy section of RESULTS.md")
    args = parser.parse_args()
    commands = {"run": command_run, "sb3": command_sb3, "retag": command_retag, "aggregate": command_aggregate}
    commands[args.command](args)


if __name__ == "__main__":
    main()
