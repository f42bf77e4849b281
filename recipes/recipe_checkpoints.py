"""Training state on disk: atomic checkpoints (the last two kept), RNG state, and resuming.

A run directory holds ``checkpoints/frames_<frames>.pt``. Each is written to a temporary file,
flushed to disk and renamed, so a kill at any moment leaves the previous checkpoints intact; the
newest readable one is the one to resume from.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import random
import re
import socket
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.data import ReplayBuffer

from recipe_schema import RESUME_MAY_CHANGE, ConfigError

CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"  # held by the one process that writes the run directory
KEEP = 2
_NAME = re.compile(r"frames_(\d+)\.pt")


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class RunDirectoryBusy(ConfigError):
    """Another live process writes this run directory."""


def lock_run_directory(run_dir: Path) -> IO[str]:
    """Hold an exclusive lock on ``run_dir/.lock`` until this process ends (keep the returned file
    open); a second run or an overlapping resume of the same directory fails in one line naming the
    holder, before it touches the logs or the checkpoints."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirectoryBusy(
            f"{run_dir} is in use by {holder}: one run writes a directory at a time. Wait for it to end, "
            "or give this run another directory (hydra.run.dir=...)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    return handle


class CompactReplay:
    """A replay buffer as checkpoints hold it: only its filled rows (a 1M-slot buffer after 2k frames
    saves 2k rows), with its writer's cursor; loading puts every row back in its slot."""

    def __init__(self, replay: ReplayBuffer):
        self.replay = replay

    def state_dict(self) -> dict[str, Any]:
        state = self.replay.state_dict()
        filled = len(self.replay)
        state["_storage"] = {"filled_rows": self.replay.storage[:filled].clone() if filled else None}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rows = state["_storage"].get("filled_rows")
        self.replay.empty()
        if rows is not None:
            self.replay.extend(rows)  # the storage's slots [0, filled), as saved
        # the full storage's own state (now holding the rows), then the writer's cursor and the rest
        self.replay.load_state_dict({**state, "_storage": self.replay.storage.state_dict()})


def training_state(stateful: dict[str, Any], counters: dict[str, int], cfg: DictConfig) -> dict[str, Any]:
    """Everything a resume needs: each object's ``state_dict()``, counters, RNGs and the config."""
    state = {name: obj.state_dict() if obj is not None else None for name, obj in stateful.items()}
    state.update(counters=dict(counters), rng=rng_state(), config=OmegaConf.to_container(cfg, resolve=True))
    return state


def restore(stateful: dict[str, Any], state: dict[str, Any]) -> dict[str, int]:
    """Load each object's state and the RNGs; returns the counters."""
    for name, obj in stateful.items():
        if obj is not None and state.get(name) is not None:
            obj.load_state_dict(state[name])
    set_rng_state(state["rng"])
    return dict(state["counters"])


def checkpoint_name(frames: int) -> str:
    return f"frames_{frames:012d}.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/frames_<frames>.pt`` atomically, then keep only the newest ``KEEP``.

    The file holds the serialised state and its SHA-256, which :func:`load_checkpoint` verifies: a
    flipped bit anywhere in the data makes the checkpoint unreadable, never silently different.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(state["counters"]["frames"])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        torch.save({"sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(directory)[KEEP:]:
        old.unlink()
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest (most frames) first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)), reverse=True)


def run_dir_of(location: str | Path) -> Path:
    """The run directory of ``location``: a run directory itself, or a checkpoint file inside one."""
    path = Path(location)
    if path.is_file() and path.parent.name == CHECKPOINT_DIR:
        return path.parent.parent
    return path.parent if path.is_file() else path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The state in a checkpoint file, its checksum verified (files written before checksums load as they are)."""
    state = torch.load(Path(path), weights_only=False, map_location="cpu")
    if isinstance(state, dict) and "payload" in state:
        if hashlib.sha256(state["payload"]).hexdigest() != state.get("sha256"):
            raise ValueError("checksum mismatch: the data changed after it was written")
        state = torch.load(io.BytesIO(state["payload"]), weights_only=False, map_location="cpu")
    if not isinstance(state, dict) or "counters" not in state:
        raise ValueError("not a torchrl-stac checkpoint")
    return state


def load_checkpoint(location: str, key: str = "resume") -> tuple[dict[str, Any], Path]:
    """The checkpoint at ``location`` (a file, or a run directory's newest readable one) and its path.

    A run directory whose newest checkpoint is unreadable (e.g. truncated) falls back to the
    previous one and says so; an unreadable file named explicitly is an error naming the previous
    good checkpoint. ``key`` names the override in messages.
    """
    path = Path(location)
    if path.is_dir():
        candidates = list_checkpoints(path / CHECKPOINT_DIR)
        if not candidates:
            raise ConfigError(f"{key}={location}: no checkpoint in {path / CHECKPOINT_DIR}.")
        failures = []
        for candidate in candidates:
            try:
                state = read_checkpoint(candidate)
            except Exception as error:  # noqa: BLE001 - any unreadable file: try the previous one
                failures.append(f"{candidate.name} is unreadable ({_reason(error)})")
                continue
            if failures:
                print(f"warning: {'; '.join(failures)}; resuming from {candidate}.", flush=True)
            return state, candidate
        raise ConfigError(f"{key}={location}: every checkpoint is unreadable: {'; '.join(failures)}.")
    if not path.is_file():
        raise ConfigError(f"{key}={location}: no run directory or checkpoint file there.")
    try:
        return read_checkpoint(path), path
    except Exception as error:  # noqa: BLE001
        older = [p for p in list_checkpoints(path.parent) if p != path and _readable(p)]
        hint = f" The previous good checkpoint is {older[0]}: pass {key}={older[0]}." if older else ""
        raise ConfigError(f"{key}={location}: the file is corrupted or truncated ({_reason(error)}).{hint}") from None


def _readable(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except Exception:  # noqa: BLE001
        return False
    return True


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}"


AUTO = "auto"  # resume=auto: continue this job's own directory if it holds a checkpoint, else start fresh


def resume_point(cfg: DictConfig, run_dir: Path | None) -> tuple[dict[str, Any] | None, Path | None, Path]:
    """(saved state, its file, the run directory): the checkpoint to resume from, checked, and the
    directory to write into (the resumed run's own with ``resume=<dir or file>``, else ``run_dir``).

    ``resume=auto`` (sweeps, preemptible jobs): resume ``run_dir`` itself when it holds a checkpoint,
    else start fresh there; a run already at ``total_frames`` comes back as is (see :func:`complete`).
    """
    if not cfg.resume:
        return None, None, Path(run_dir)
    if cfg.resume == AUTO:
        if not list_checkpoints(Path(run_dir) / CHECKPOINT_DIR):
            return None, None, Path(run_dir)
        state, path = load_checkpoint(str(run_dir))
        check_resumable(cfg, state, str(run_dir), allow_complete=True)
        return state, path, Path(run_dir)
    state, path = load_checkpoint(cfg.resume)
    check_resumable(cfg, state, cfg.resume)
    return state, path, run_dir_of(cfg.resume)


def complete(cfg: DictConfig, state: dict[str, Any] | None) -> bool:
    """Whether a resumed state already holds ``total_frames`` (only ``resume=auto`` lets one through)."""
    return state is not None and state["counters"]["frames"] >= cfg.total_frames


def check_resumable(cfg: DictConfig, state: dict[str, Any], location: str, allow_complete: bool = False) -> None:
    """A resumed run must keep the keys that define the experiment; the message lists what to pass.
    A finished run (``total_frames`` reached) is an error unless ``allow_complete``."""
    saved = state["config"]
    current = OmegaConf.to_container(cfg, resolve=True)
    changed = {k: v for k, v in saved.items() if k not in RESUME_MAY_CHANGE and current.get(k) != v}
    if changed:
        overrides = " ".join(f"{k}={_as_override(v)}" for k, v in changed.items())
        raise ConfigError(
            f"resume={location} was trained with {overrides}; pass the same values (only "
            f"{', '.join(sorted(RESUME_MAY_CHANGE - {'resume'}))} may change on resume)."
        )
    if state["counters"]["frames"] >= cfg.total_frames and not allow_complete:
        raise ConfigError(
            f"resume={location} already has {state['counters']['frames']} frames >= total_frames={cfg.total_frames}: "
            "raise total_frames to train on."
        )


def _as_override(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)
