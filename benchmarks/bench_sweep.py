"""Benchmark runs as one Hydra multirun of a recipe, on any Hydra launcher.

Each run has a name and its own ``key: value`` settings. :func:`launch` writes one config-group
option per run (``<sweep dir>/.runs/bench_run/<name>.yaml``) and starts a single multirun over the
group, ``+bench_run=<name>,<name>,...``, with ``resume=auto``: each job trains in
``<sweep dir>/<name>/`` and, when that directory already holds a checkpoint (a killed or preempted
run), continues from it. The launcher is Hydra's: ``joblib`` (parallel on this machine, the default),
``submitit_slurm`` (a SLURM cluster) or ``ray`` (a Ray cluster); its settings go in ``overrides``
(e.g. ``hydra.launcher.partition=gpu``). Runs whose result file exists are the caller's to leave out.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def launch(
    recipe: str,
    config_name: str,
    runs: dict[str, dict[str, Any]],
    sweep_dir: Path,
    overrides: list[str],
    launcher: str = "joblib",
    jobs: int = 2,
    on_poll: Callable[[], None] | None = None,
    poll_seconds: float = 60.0,
) -> subprocess.CompletedProcess:
    """Train ``runs`` (name → settings) with ``recipes/<recipe>`` as one multirun into ``sweep_dir``.

    ``overrides`` apply to every run; the multirun's output goes to ``<sweep dir>/sweep.log``.
    ``on_poll`` is called every ``poll_seconds`` while the multirun trains (e.g. to write the result
    files of the runs that have finished, so that they can be committed before the sweep ends).
    """
    options = Path(sweep_dir) / ".runs" / "bench_run"
    options.mkdir(parents=True, exist_ok=True)
    for name, settings in runs.items():
        (options / f"{name}.yaml").write_text("# @package _global_\n" + OmegaConf.to_yaml(OmegaConf.create(settings)))
    command = [
        sys.executable,
        str(RECIPES / recipe),
        "-m",
        "--config-name",
        config_name,
        "--config-dir",
        str(options.parent),
        f"+bench_run={','.join(runs)}",
        *overrides,
        "resume=auto",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.runtime.choices.bench_run}",
        f"hydra/launcher={launcher}",
        *([f"hydra.launcher.n_jobs={jobs}"] if launcher == "joblib" else []),
    ]
    with open(Path(sweep_dir) / "sweep.log", "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        while True:
            try:
                process.wait(timeout=poll_seconds)
                break
            except subprocess.TimeoutExpired:
                if on_poll is not None:
                    on_poll()
    return subprocess.CompletedProcess(command, process.returncode)


def settings(overrides: list[str]) -> dict[str, Any]:
    """``["env=Hopper-v4", "actor_lr=0.1"]`` → ``{"env": "Hopper-v4", "actor_lr": 0.1}`` (YAML-typed values)."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(overrides))


def eval_curve(run_dir: Path) -> list[tuple[int, float]]:
    """The run's deterministic evaluations: [(frames, mean return), ...] (empty before the first)."""
    path = Path(run_dir) / "logs" / "scalars" / "eval" / "return_mean.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [(int(float(frames)), float(value)) for frames, value in csv.reader(f)]


def finished(run_dir: Path, total_frames: int) -> bool:
    """Whether the run trained to ``total_frames`` (its newest checkpoint, ``frames_<N>.pt``, says so)."""
    saved = [int(path.stem.split("_")[1]) for path in (Path(run_dir) / "checkpoints").glob("frames_*.pt")]
    return max(saved, default=0) >= total_frames


def completed(run_dir: Path, total_frames: int) -> bool:
    """Finished, and its process is done with it: ``summary.json`` is written after the last checkpoint
    and evaluation, so a run that is ``completed`` can be collected while the sweep goes on."""
    return finished(run_dir, total_frames) and (Path(run_dir) / "summary.json").is_file()


@dataclass(frozen=True)
class Result:
    """A run's result file, and how to write it once the run is done."""

    path: Path  # the result file
    run_dir: Path
    total_frames: int
    write: Callable[[], str]  # writes ``path`` from ``run_dir``; returns a one-line summary


def collect(results: Mapping[str, Result], ready: Callable[[Path, int], bool] = completed) -> list[str]:
    """Write the result file of each run that is ``ready`` and has none yet; return the names still without one.

    Pass it to :func:`launch` as ``on_poll`` (``ready=completed``: the run's process is done with it),
    and call it with ``ready=finished`` once the sweep has ended.
    """
    missing = []
    for name, result in results.items():
        if result.path.exists():
            continue
        if ready(result.run_dir, result.total_frames):
            print(result.write(), flush=True)
        else:
            missing.append(name)
    return missing


def write_json(path: Path, record: dict) -> None:
    """Write a result file atomically (a temporary file renamed over it): a killed run leaves none or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def log_tail(sweep_dir: Path, lines: int = 5) -> str:
    text = (Path(sweep_dir) / "sweep.log").read_text().strip().splitlines()
    return "\n".join(text[-lines:]) if text else "no output"
