"""Running a recipe from the command line: where its run lives, and one-line errors for bad input."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from recipe_checkpoints import AUTO, LOCK_FILE, RunDirectoryBusy, run_dir_of
from recipe_run import RunInterrupted, stop_signals
from recipe_schema import ConfigError, StacConfig, allowed, unknown_key


def _run_dir(resume: str | None, fresh: str) -> str:
    """``hydra.run.dir``: a resumed run continues in its own directory; otherwise (and with
    ``resume=auto``, which resumes whatever directory the run is given) ``fresh``."""
    return str(run_dir_of(resume)) if resume and resume != AUTO else fresh


def _hydra_subdir(resume: str | None, now: str) -> str:
    """Hydra's record of the command line, one per start (``now`` to the microsecond), so that a start
    refused because the directory is in use neither overwrites the live run's record nor leaves one."""
    return f".hydra/resumed_{now}" if resume and resume != AUTO else f".hydra/{now}"


def _path_part(value: str) -> str:
    """``value`` as one directory name: path separators and other unsafe characters become ``_`` and
    leading dots are dropped, so that ``env=../../x`` cannot place a run outside ``runs/``."""
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", str(value)).lstrip(".") or "_"


RECIPES = Path(__file__).resolve().parent  # the recipes' YAML presets

OmegaConf.register_new_resolver("stac_run_dir", _run_dir, replace=True)
OmegaConf.register_new_resolver("stac_hydra_subdir", _hydra_subdir, replace=True)
OmegaConf.register_new_resolver("stac_path_part", _path_part, replace=True)


def main(train: Callable[[DictConfig, Path], Any], config_name: str, schema: type) -> None:
    """A recipe's command line: compose ``recipes/<config_name>.yaml`` with the overrides, then
    ``train(cfg, run_dir)`` in Hydra's run directory; bad input ends in one ``error:`` line."""

    @hydra.main(config_path=str(RECIPES), config_name=config_name, version_base="1.3")
    @one_line_errors
    def task(cfg: DictConfig) -> None:
        train(cfg, Path(HydraConfig.get().runtime.output_dir))

    run(task, schema)


_LAUNCHER_PID: int | None = None  # the process that parsed the command line (set by run)


def quiet_libraries() -> None:
    """Silence library messages a recipe's user cannot act on: Gymnasium's notice that a ``-v4`` MuJoCo
    task has a ``-v5`` (the benchmarks use ``-v4`` on purpose), VecNormV2's "experimental" notice for
    batched envs, and TorchRL's INFO lines (e.g. the replay storage's size)."""
    warnings.filterwarnings(
        "ignore", message=r".*is out of date\. You should consider upgrading", category=DeprecationWarning
    )
    warnings.filterwarnings("ignore", message=r"Support of VecNormV2 for containers with non-empty batch-size")
    logging.getLogger("torchrl").setLevel(logging.WARNING)


def run(main: Callable[[], None], schema: type = StacConfig) -> None:
    """Call a ``@hydra.main`` function; a config Hydra cannot compose ends in one ``error:`` line.

    Hydra's composition errors (a wrong type, an unknown key) reach this function as exceptions and
    leave with exit status 1; the task's own checks are :func:`one_line_errors`'s job. A multirun
    (``-m``) stopped by SIGINT or SIGTERM exits 128 + signal once its jobs have checkpointed
    (:class:`SweepSignals`).
    """
    global _LAUNCHER_PID
    _LAUNCHER_PID = os.getpid()
    quiet_libraries()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach this function as exceptions
    options, unknown = get_args_parser().parse_known_args(sys.argv[1:])
    if unknown:
        sys.exit(
            f"error: unknown option {unknown[0]}: give key=value overrides (--help lists them) and Hydra's "
            "options (-m, --cfg job, --config-name, ...)."
        )
    modes = options.run + options.multirun + options.shell_completion + (options.cfg is not None)
    if modes + (options.info is not None) > 1:
        sys.exit("error: give one of --run, --multirun (-m), --cfg, --info and --shell-completion.")
    sweep = SweepSignals() if options.multirun else None
    try:
        main()
    except (HydraException, OmegaConfBaseException) as error:
        sys.exit(f"error: {composition_error(error, schema)}")
    except OSError as error:  # the file system refused (a run directory, a checkpoint, a log)
        sys.exit(f"error: {error.filename or 'the file system'}: {error.strerror or error}.")
    finally:
        if sweep is not None:
            sweep.close()
    if sweep is not None and sweep.received:
        name = signal.Signals(sweep.received[0]).name
        print(
            f"sweep stopped by {name}: each run printed its resume line (or relaunch the sweep with "
            "resume=auto and the same hydra.sweep.dir)",
            file=sys.stderr,
        )
        sys.exit(128 + sweep.received[0])


def _stop_marker(launcher_pid: int) -> Path:
    """The file that tells a sweep's job processes that their launcher was stopped."""
    return Path(tempfile.gettempdir()) / f"torchrl-stac-sweep-{launcher_pid}.stop"


def _child_pids() -> list[int]:
    """This process's direct children (Linux ``/proc``; none elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                children.append(int(stat.parent.name))
    return children


class SweepSignals:
    """SIGINT and SIGTERM in a multirun's launcher process (joblib's launcher: the jobs run in its
    child processes).

    The signal goes on to the children, where each running job checkpoints and prints its resume
    line (:meth:`recipe_run.TrainingRun.batches`) and returns; a job that had not started yet sees
    the stop marker and does not start. The launcher itself keeps waiting for them.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.marker = _stop_marker(os.getpid())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._forward)

    def _forward(self, signum: int, frame: Any) -> None:
        if not self.received:
            self.marker.touch()
        self.received.append(signum)
        for pid in _child_pids():  # joblib's resource trackers ignore both signals
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def close(self) -> None:
        self.marker.unlink(missing_ok=True)


def _in_sweep_child() -> bool:
    """This task runs in a job process of a multirun's launcher (not in the launcher itself)."""
    return HydraConfig.get().mode == RunMode.MULTIRUN and os.getpid() != _LAUNCHER_PID


def _sweep_stopped() -> bool:
    """This task belongs to a multirun whose launcher received SIGINT or SIGTERM."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return _stop_marker(os.getppid() if _in_sweep_child() else os.getpid()).exists()


def one_line_errors(task: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """Wrap a Hydra task: bad input (:class:`ConfigError`) or non-finite training values exit with one line.

    A run stopped by its checks leaves no directory behind; any other exception is a bug and keeps
    its traceback.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> None:
        if _sweep_stopped():
            print("not started: the sweep was stopped", file=sys.stderr, flush=True)
            return
        try:
            with stop_signals():
                task(cfg)
        except RunInterrupted as stop:  # a signal: checkpointed, the line printed
            if _in_sweep_child():
                return  # the launcher exits with the signal's status once every job has returned
            sys.exit(stop.code)
        except RunDirectoryBusy as error:  # the directory belongs to a live run: leave all of it alone
            _discard_hydra_output(keep_directory=True)
            sys.exit(f"error: {error}")
        except ConfigError as error:
            _discard_hydra_output()
            sys.exit(f"error: {error}")
        except FloatingPointError as error:
            sys.exit(f"error: training stopped, {error} The checkpoints written so far are intact.")

    return wrapped


def _discard_hydra_output(keep_directory: bool = False) -> None:
    """A run stopped by its checks leaves nothing: Hydra's record of this start, and (unless
    ``keep_directory``: it belongs to a live run) its lock and its directories if now empty."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    output = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.output_subdir:
        shutil.rmtree(output / hydra_cfg.output_subdir, ignore_errors=True)
        with contextlib.suppress(OSError):  # .hydra/ itself, if this start's record was its only one
            (output / hydra_cfg.output_subdir).parent.rmdir()
    if keep_directory:
        return
    (output / LOCK_FILE).unlink(missing_ok=True)  # this run's own lock
    cwd = Path.cwd().resolve()
    directory = output.resolve()
    if directory == cwd or directory in cwd.parents:
        return  # never the working directory or above it
    with contextlib.suppress(OSError):  # only empty directories: rmdir refuses the others
        directory.rmdir()
        while (directory := directory.parent) != cwd and cwd in directory.parents:
            directory.rmdir()


def composition_error(error: Exception, schema: type) -> str:
    """One line for an error Hydra raised while composing the config from the command line."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    key = getattr(cause, "full_key", None) or ""
    name = re.split(r"[.\[]", key)[0]
    known = {f.name for f in fields(schema)}
    if name and name not in known and isinstance(cause, ConfigKeyError | AttributeError):
        return str(unknown_key(schema, name))
    override = re.search(r"override (\S+?)=(\S*)", str(error))
    if name in known and override:
        return f"{name}={override.group(2)!r} is not allowed: expected {allowed(schema, name)}."
    lines = [line.strip() for line in f"{error}\n{cause if cause is not error else ''}".splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("full_key", "object_type")))
