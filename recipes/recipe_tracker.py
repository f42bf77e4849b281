"""What every recipe does after an update: training returns, evaluation, logs, checkpoints, progress.

Evaluations and checkpoints fall on a grid of frames (``eval_interval``, ``checkpoint_interval``)
and at the end; after each checkpoint all envs restart fresh, seeded episodes, so that a run
resumed from any checkpoint is bit-identical to the uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tensordict import TensorDictBase
from torchrl.record.loggers import Logger
from tqdm import tqdm

from recipe_envs import start_fresh_episodes
from recipe_logs import PhaseTimer, log_scalars


class RunTracker:
    """Per-batch bookkeeping of a training run; starts the collector's first seeded episodes.

    Args:
        cfg: the run's config (``seed``, ``total_frames``, ``eval_interval``, ``checkpoint_interval``).
        counters: ``frames``, ``iterations`` and ``evaluations`` (updated here: ``evaluations``).
        logger: a torchrl logger or None.
        timer: the loop's phase timer (its seconds are logged with each batch).
        collector: restarted with fresh seeded episodes after each checkpoint.
        evaluate_policy: ``seed -> returns`` of the deterministic policy.
        checkpoint: writes a checkpoint, returns its path.
        label: the progress bar's title.
    """

    def __init__(
        self,
        cfg: DictConfig,
        counters: dict[str, int],
        logger: Logger | None,
        timer: PhaseTimer,
        collector,
        evaluate_policy: Callable[[int], list[float]],
        checkpoint: Callable[[], Path],
        label: str,
    ):
        self.cfg, self.counters, self.logger, self.timer = cfg, counters, logger, timer
        self.collector, self.evaluate_policy, self.checkpoint = collector, evaluate_policy, checkpoint
        self.recent_returns: list[float] = []
        self.last_eval: list[float] = []
        self.last_checkpoint: Path | None = None
        self.next_eval = (counters["frames"] // cfg.eval_interval + 1) * cfg.eval_interval
        self.next_checkpoint = (counters["frames"] // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval
        self.progress = tqdm(total=cfg.total_frames, initial=counters["frames"], unit="frames", desc=label)
        self.start_wall = time.perf_counter()
        # Fresh, seeded episodes at the start and after every checkpoint: a resumed run is bit-identical.
        start_fresh_episodes(collector, cfg.seed + 1_000 * counters["iterations"])

    def after_batch(self, batch: TensorDictBase, metrics: dict[str, float]) -> None:
        """Log ``metrics`` with the batch's returns and phase times; evaluate and checkpoint when due."""
        cfg, counters = self.cfg, self.counters
        finished = batch["next", "episode_reward"][batch["next", "done"]]
        if finished.numel():
            self.recent_returns = (self.recent_returns + finished.tolist())[-20:]
            metrics["train/episode_return"] = float(finished.mean())
        metrics.update(self.timer.pop())
        done = counters["frames"] >= cfg.total_frames
        if counters["frames"] >= self.next_eval or done:
            self.last_eval = self.evaluate_policy(cfg.seed + 10_000 * (1 + counters["evaluations"]))
            counters["evaluations"] += 1
            metrics["eval/return_mean"] = float(np.mean(self.last_eval))
            metrics["eval/return_std"] = float(np.std(self.last_eval))
            self.next_eval += cfg.eval_interval
        log_scalars(self.logger, metrics, counters["frames"])
        if counters["frames"] >= self.next_checkpoint or done:
            self.last_checkpoint = self.checkpoint()
            self.next_checkpoint += cfg.checkpoint_interval
            if not done:
                start_fresh_episodes(self.collector, cfg.seed + 1_000 * counters["iterations"])
        self.progress.update(batch.numel())
        postfix = {"return": f"{np.mean(self.recent_returns):.1f}" if self.recent_returns else "-"}
        if self.last_eval:
            postfix["eval"] = f"{np.mean(self.last_eval):.1f}"
        self.progress.set_postfix(postfix)

    def finish(self, run_dir: Path) -> dict[str, Any]:
        """Close the progress bar; the run's summary (frames, wall time of this session, last evaluation,
        checkpoint), also written to ``run_dir/summary.json`` for sweep collectors."""
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
            "run_dir": str(run_dir),
            "checkpoint": str(self.last_checkpoint),
            "phase_seconds": dict(self.timer.totals),
        }
        path = Path(run_dir) / "summary.json"
        path.with_suffix(".tmp").write_text(json.dumps(summary, indent=1))
        path.with_suffix(".tmp").replace(path)  # atomic: sweeps collect the run once this file exists
        return summary
