"""Run logs: a torchrl logger that continues a resumed run in place, and per-phase timers.

Scalars are indexed by frames. On resume, rows logged after the checkpoint (the frames a kill
lost) are dropped first, so the continued log has every frame count exactly once.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torchrl.record.loggers import Logger, get_logger

LOG_DIR = "logs"


def make_logger(kind: str, run_dir: Path, resume_frames: int | None, saved_state: dict | None) -> Logger | None:
    """``csv`` (``<run_dir>/logs/scalars/<name>.csv``), ``tensorboard``, ``wandb`` or ``none``.

    ``resume_frames``: the resumed checkpoint's frame count (None for a fresh run); CSV rows and
    TensorBoard events after it are discarded. ``saved_state``: a W&B logger's ``state_dict()``
    from the checkpoint, to continue the same W&B run.
    """
    if kind == "none":
        return None
    if kind == "csv" and resume_frames is not None:
        trim_csv_logs(Path(run_dir) / LOG_DIR / "scalars", resume_frames)
    wandb_kwargs = {"project": "torchrl-stac"}
    state = saved_state if kind == "wandb" else None
    logger = get_logger(
        kind, logger_name=str(run_dir), experiment_name=LOG_DIR, state_dict=state, wandb_kwargs=wandb_kwargs
    )
    if kind == "tensorboard" and resume_frames is not None:
        from torch.utils.tensorboard import SummaryWriter

        logger.experiment.close()  # reopen with TensorBoard's own rewind: events after the checkpoint are purged
        logger.experiment = SummaryWriter(log_dir=logger.log_dir, purge_step=resume_frames + 1)
    return logger


def trim_csv_logs(scalars_dir: Path, frames: int) -> None:
    """Drop CSV rows logged after ``frames`` (and a torn last line); each file is rewritten atomically."""
    if not scalars_dir.is_dir():
        return
    for path in scalars_dir.rglob("*.csv"):
        kept = []
        for line in path.read_text().splitlines(keepends=True):
            step, _, value = line.strip().partition(",")
            if line.endswith("\n") and value and int(float(step)) <= frames:
                kept.append(line)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def log_scalars(logger: Logger | None, values: dict[str, Any], frames: int) -> None:
    if logger is not None:
        for name, value in values.items():
            logger.log_scalar(name, float(value), step=frames)


class PhaseTimer:
    """Seconds per phase of the current iteration (``with timer("critic"):`` or ``add``), and run totals."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        tic = time.perf_counter()
        yield
        self.add(phase, time.perf_counter() - tic)

    def add(self, phase: str, seconds: float) -> None:
        self.current[phase] += seconds
        self.totals[phase] += seconds

    def pop(self) -> dict[str, float]:
        """This iteration's seconds as ``time/<phase>`` metrics; starts the next iteration."""
        metrics = {f"time/{phase}": seconds for phase, seconds in self.current.items()}
        self.current = defaultdict(float)
        return metrics
