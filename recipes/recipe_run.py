"""The start and end of every recipe's training run, written once; the loop itself stays in each script.

:class:`TrainingRun` checks the config and the env, finds the checkpoint to resume from, seeds,
restores the training state, opens the run directory and its logger, and keeps the frame grid of
evaluations and checkpoints (``eval_interval``, ``checkpoint_interval``, and the end). Every env
starts fresh, seeded episodes at the start and after each checkpoint, so that a run resumed from
any checkpoint is bit-identical to the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tqdm import tqdm

from recipe_checkpoints import (
    checkpoint_name,
    complete,
    lock_run_directory,
    restore,
    resume_point,
    save_checkpoint,
    seed_everything,
    training_state,
)
from recipe_envs import check_env, onpolicy_collector, start_fresh_episodes
from recipe_logs import PhaseTimer, log_scalars, make_logger
from recipe_schema import validate

STOP_SIGNALS: list[int] = []  # SIGINT/SIGTERM received inside stop_signals(), in order


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Record SIGINT and SIGTERM in :data:`STOP_SIGNALS` instead of acting on them, for a training
    task's whole life (setup included); :meth:`TrainingRun.batches` stops on them. The previous
    handlers come back on exit."""
    STOP_SIGNALS.clear()
    previous = {signum: signal.signal(signum, _record) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _record(signum: int, frame: Any) -> None:
    STOP_SIGNALS.append(signum)


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint; ``code`` is the exit status (128 + signal)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class TrainingRun:
    """One training run of ``recipe`` (``"stac"``, ``"stppo"`` or ``"stsac"``) into ``run_dir``.

    Construction checks everything before anything is built and seeds torch, numpy and python.
    Then: build the players, :meth:`open` (restore a resumed state, write the config, open the
    logger), build the collector and loop over :meth:`batches`: the update,
    :meth:`evaluation_due`/:meth:`evaluate`, :meth:`log`, :meth:`checkpoint_due`/:meth:`checkpoint`;
    at the end :meth:`finish`.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path | None, recipe: str):
        validate(cfg)
        check_env(cfg.env, cfg.get("env_backend", "gymnasium"))
        self.cfg, self.recipe = cfg, recipe
        self.resumed, self.resumed_from, self.run_dir = resume_point(cfg, run_dir)
        self.lock = lock_run_directory(self.run_dir)  # one writer per run directory, for this process's life
        self.counters = {"frames": 0, "iterations": 0, "evaluations": 0}
        self.timer = PhaseTimer()
        self.stateful: dict[str, Any] = {}
        self.recent_returns: list[float] = []
        self.unlogged_returns: list[float] = []  # training episodes finished since the last written row
        self.last_eval: list[float] = []
        self.last_checkpoint: Path | None = None
        if self.complete:
            return
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)

    @property
    def complete(self) -> bool:
        """A resumed run already at ``total_frames`` (``resume=auto`` on a finished sweep job)."""
        return complete(self.cfg, self.resumed)

    @property
    def done(self) -> bool:
        return self.counters["frames"] >= self.cfg.total_frames

    def open(self, stateful: dict[str, Any], counters: dict[str, int] | None = None) -> None:
        """Restore ``stateful`` (name → object with ``state_dict``) from the resumed checkpoint, if any;
        write the config and open the logger. ``counters``: the recipe's extra counters (e.g. updates)."""
        self.stateful = stateful
        self.counters.update(counters or {})
        if self.resumed is not None:
            self.counters = restore(stateful, self.resumed)
            print(
                f"resuming {self.run_dir} from {self.resumed_from.name} at {self.counters['frames']} frames", flush=True
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)
        saved_logger = self.resumed.get("logger") if self.resumed else None
        frames = self.counters["frames"] if self.resumed else None
        self.logger = make_logger(self.cfg.logger, self.run_dir, frames, saved_logger)
        self.next_eval = self._next_multiple(self.cfg.eval_interval)
        self.next_checkpoint = self._next_multiple(self.cfg.checkpoint_interval)
        self.next_log = self._next_multiple(self.cfg.get("log_interval", 1))

    def _next_multiple(self, interval: int) -> int:
        return (self.counters["frames"] // interval + 1) * interval

    def frames_left(self, frames_per_batch: int) -> int:
        """The frames still to collect, in whole batches."""
        return math.ceil((self.cfg.total_frames - self.counters["frames"]) / frames_per_batch) * frames_per_batch

    def onpolicy_collector(self, actor) -> tuple[Any, Any]:
        """The on-policy collector for the frames left and its observation statistics (or None), which
        join the training state (restored on resume)."""
        saved_norm = self.resumed.get("observation_norm") if self.resumed is not None else None
        collector, norm = onpolicy_collector(self.cfg, actor, self.frames_left(self.cfg.frames_per_batch), saved_norm)
        if norm is not None:
            self.stateful["observation_norm"] = norm
        return collector, norm

    def episode_seed(self) -> int:
        """The seed of the fresh episodes that start the run and follow each checkpoint."""
        return self.cfg.seed + 1_000 * self.counters["iterations"]

    def batches(self, collector, label: str) -> Iterator[TensorDictBase]:
        """The collector's batches, time last (``[num_envs, T]`` or ``[T]``), timed and counted; the
        collector starts on fresh seeded episodes, and shuts down at the end.

        Inside :func:`stop_signals` (every command-line run), SIGINT and SIGTERM stop the run at the
        next batch boundary (the loop's body finished; a signal during setup: after the first batch):
        a checkpoint, the collector's workers stopped, one line with the resume command on stderr,
        and :class:`RunInterrupted` (exit status 130 or 143).
        """
        self.progress = tqdm(  # redrawn at most once a second: per-step runs would otherwise redraw every frame
            total=self.cfg.total_frames, initial=self.counters["frames"], unit="frames", desc=label, mininterval=1.0
        )
        self.start_wall = time.perf_counter()
        start_fresh_episodes(collector, self.episode_seed())
        self.collector = collector
        iterator = iter(collector)
        while True:  # at least one batch: a collector's workers shut down cleanly once they have run
            with self.timer("collect"):
                batch = next(iterator, None)
            if batch is None:
                break
            if batch.batch_dims == 3:  # several workers: [workers, envs per worker, T] -> [num_envs, T]
                batch = batch.reshape(-1, batch.shape[-1])
            self.counters["frames"] += batch.numel()
            self.counters["iterations"] += 1
            yield batch
            if STOP_SIGNALS:
                break
        if STOP_SIGNALS and not self.done:
            self._stop(STOP_SIGNALS[0])
        collector.shutdown()

    def _stop(self, signum: int) -> None:
        """Checkpoint (unless this batch was just saved), stop the collector, and leave with one line."""
        saved = self.last_checkpoint is not None and self.last_checkpoint.name == checkpoint_name(
            self.counters["frames"]
        )
        path = self.last_checkpoint if saved else self._save()  # no fresh episodes: the run stops here
        self.collector.shutdown()
        self.progress.close()
        name = signal.Signals(signum).name
        script = Path(sys.argv[0]).name if sys.argv and sys.argv[0].endswith(".py") else "<recipe>.py"
        print(
            f"stopped by {name} at {self.counters['frames']} frames ({path}); continue with: "
            f"python recipes/{script} resume={self.run_dir} (and this run's other overrides)",
            file=sys.stderr,
            flush=True,
        )
        raise RunInterrupted(128 + signum)

    def evaluation_due(self) -> bool:
        return self.counters["frames"] >= self.next_eval or self.done

    def evaluate(self, evaluate_policy: Callable[[int], list[float]]) -> dict[str, float]:
        """Run ``evaluate_policy(seed)`` (deterministic returns) on this evaluation's seed; its metrics."""
        self.last_eval = evaluate_policy(self.cfg.seed + 10_000 * (1 + self.counters["evaluations"]))
        self.counters["evaluations"] += 1
        self.next_eval += self.cfg.eval_interval
        return {"eval/return_mean": float(np.mean(self.last_eval)), "eval/return_std": float(np.std(self.last_eval))}

    def log_due(self) -> bool:
        """Whether a row of metrics is written after this batch: every ``log_interval`` frames (a recipe
        without the key: every batch), and at every checkpoint and the end, so that none is lost."""
        return self.counters["frames"] >= self.next_log or self.checkpoint_due()

    def log(self, batch: TensorDictBase, metrics: dict[str, float] | None) -> None:
        """Advance the bar with the batch's finished training episodes. Unless ``metrics`` is None, write
        them with the mean return of the episodes finished since the last row and the phase times since."""
        finished = batch["next", "episode_reward"][batch["next", "done"]]
        if finished.numel():
            self.recent_returns = (self.recent_returns + finished.tolist())[-20:]
            self.unlogged_returns += finished.tolist()
        if metrics is not None:
            if self.unlogged_returns:
                metrics["train/episode_return"] = float(np.mean(self.unlogged_returns))
                self.unlogged_returns = []
            log_scalars(self.logger, {**metrics, **self.timer.pop()}, self.counters["frames"])
            self.next_log = self._next_multiple(self.cfg.get("log_interval", 1))
        self.progress.update(batch.numel())
        postfix = {"return": f"{np.mean(self.recent_returns):.1f}" if self.recent_returns else "-"}
        if self.last_eval:
            postfix["eval"] = f"{np.mean(self.last_eval):.1f}"
        self.progress.set_postfix(postfix, refresh=False)  # shown at the bar's next redraw

    def checkpoint_due(self) -> bool:
        return self.counters["frames"] >= self.next_checkpoint or self.done

    def checkpoint(self) -> Path:
        """Save the training state, the recipe's name and a W&B logger's run id as the newest checkpoint;
        unless the run is done, every env then restarts on fresh seeded episodes (so a run resumed from
        this checkpoint is bit-identical to the uninterrupted one)."""
        path = self._save()
        self.next_checkpoint += self.cfg.checkpoint_interval
        if not self.done:
            start_fresh_episodes(self.collector, self.episode_seed())
        return path

    def _save(self) -> Path:
        state = training_state(self.stateful, self.counters, self.cfg)
        state["recipe"] = self.recipe
        state["logger"] = self.logger.state_dict() if self.cfg.logger == "wandb" else None
        self.last_checkpoint = save_checkpoint(self.run_dir, state)
        return self.last_checkpoint

    def finish(self, label: str, **extra: Any) -> dict[str, Any]:
        """Close the progress bar, print the run's last line; its summary (frames, wall time of this
        session, last evaluation, checkpoint, ``extra``), also written atomically to
        ``run_dir/summary.json`` for sweeps."""
        self.progress.close()
        last = self.last_eval
        summary = {
            "env": self.cfg.env,
            "algo": self.cfg.algo,
            "seed": self.cfg.seed,
            "frames": self.counters["frames"],
            "wall_seconds": time.perf_counter() - self.start_wall,
            "eval_return_mean": float(np.mean(last)) if last else float("nan"),
            "eval_return_std": float(np.std(last)) if last else float("nan"),
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.last_checkpoint),
            "phase_seconds": dict(self.timer.totals),
            **extra,
        }
        path = self.run_dir / "summary.json"
        path.with_suffix(".tmp").write_text(json.dumps(summary, indent=1))
        path.with_suffix(".tmp").replace(path)  # atomic: sweeps collect the run once this file exists
        self.lock.close()  # the directory is free for a resume
        details = "".join(f", {value} {key}" for key, value in extra.items() if isinstance(value, int))
        print(
            f"done: {label} on {self.cfg.env}, seed {self.cfg.seed}: {summary['frames']} frames{details} in "
            f"{summary['wall_seconds']:.1f} s, eval return {summary['eval_return_mean']:.1f} ± "
            f"{summary['eval_return_std']:.1f}; logs and checkpoints in {self.run_dir}"
        )
        return summary

    def skip_complete(self) -> dict[str, Any]:
        """The summary of a run found complete on ``resume=auto``: nothing to train."""
        frames = self.resumed["counters"]["frames"]
        print(f"{self.run_dir} already holds {frames} frames: nothing to train", flush=True)
        self.lock.close()
        return {"frames": frames, "run_dir": str(self.run_dir)}
