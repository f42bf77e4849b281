"""Bad input, run as a user would (the recipe's command line): one ``error:`` line, exit status ≠ 0,
no traceback, and no run directory left behind."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"

BOX2D = importlib.util.find_spec("Box2D") is not None

BAD_INPUTS = [
    (["regularization=abc"], "regularization='abc' is not allowed: expected a finite number >= 0."),
    (["critic_steps=1.5"], "critic_steps='1.5' is not allowed: expected an integer >= 1."),
    (["critic_steps=0"], "critic_steps=0 is not allowed: expected an integer >= 1."),
    (["total_frames=-5"], "total_frames=-5 is not allowed: expected an integer >= 1."),
    (["actor_lr=nan"], "actor_lr=nan is not allowed: expected a finite number > 0."),
    (["num_envs=0"], "num_envs=0 is not allowed: expected an integer >= 1."),
    (["optimizer=rmsprop"], "optimizer='rmsprop' is not allowed: expected one of 'sgd', 'adam'."),
    (["logger=foo"], "logger='foo' is not allowed: expected one of 'csv', 'tensorboard', 'wandb', 'none'."),
    (["hessian=foo"], "hessian='foo' is not allowed: expected one of 'exact', 'gauss_newton'."),
    (["critic_stepz=3"], "critic_stepz is not a key of this recipe. Did you mean critic_steps?"),
    (["+critic_stepz=3"], "critic_stepz is not a key of this recipe. Did you mean critic_steps?"),
    (["num_cells=[64,x]"], "num_cells='[64,x]' is not allowed: expected a non-empty list of integers >= 1."),
    (
        ["regularization_decay=linear"],
        "regularization_decay='linear' is not allowed: expected one of 'none', 'exp', 'condition'.",
    ),
    (["regularization_decay=exp", "regularization_floor=600"], "regularization_floor=600.0 must be <= regularization"),
    (["frames_per_batch=1000", "num_envs=3"], "frames_per_batch=1000 must be a multiple of num_envs=3."),
    pytest.param(
        ["device=cuda"],
        "device='cuda': CUDA is not available on this machine; use device=cpu.",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
    (["device=tpu9"], "device='tpu9' is not a torch device"),
    (["env=Hoper-v4"], "env='Hoper-v4': unknown Gymnasium environment. Did you mean Hopper-v4"),
    (["env=FrozenLake-v1"], "env='FrozenLake-v1' observes Discrete(16); the recipes need a flat Box observation"),
    pytest.param(
        ["env=LunarLanderContinuous-v3"],
        "env='LunarLanderContinuous-v3' needs a package that is not installed: Box2D is not installed",
        marks=pytest.mark.skipif(BOX2D, reason="Box2D is installed here"),
    ),
    (["resume=/no/such/run"], "resume=/no/such/run: no checkpoint in /no/such/run/checkpoints."),
    (["seed=-1"], "seed=-1 is not allowed: expected an integer in [0, 2147483647]."),
    (["--foo"], "unknown option --foo: give key=value overrides"),
    (["-m", "seed=0", "--cfg", "job"], "give one of --run, --multirun (-m), --cfg, --info and --shell-completion."),
    (["hydra.run.dir=/proc/no/run"], "/proc/no: No such file or directory."),
]


TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
SAC_BAD_INPUTS = [
    (["batch_sise=3"], "batch_sise is not a key of this recipe. Did you mean batch_size?"),
    (["critic_steps=3"], "critic_steps is not a key of this recipe."),
    (["utd_ratio=0.001", "frames_per_batch=500"], "is less than one update per batch: SAC would never train"),
    (["env=CartPole-v1"], "SAC here needs continuous (Box) actions."),
    pytest.param(
        ["logger=tensorboard"],
        "logger=tensorboard needs tensorboard: pip install tensorboard.",
        marks=pytest.mark.skipif(TENSORBOARD, reason="tensorboard is installed here"),
    ),
]


def run_recipe(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python recipes/<script> <args>`` in ``cwd``, as a user would run it."""
    return subprocess.run(
        [sys.executable, str(RECIPES / script), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _with_script(case, script: str):
    """``(overrides, message)`` or a ``pytest.param`` of it, for ``script``."""
    if hasattr(case, "marks"):  # a pytest.param (itself a tuple)
        return pytest.param(script, *case.values, marks=case.marks)
    return (script, *case)


@pytest.mark.parametrize(
    "script,overrides,message",
    [_with_script(case, "stac_mujoco.py") for case in BAD_INPUTS]
    + [_with_script(case, "stsac_mujoco.py") for case in SAC_BAD_INPUTS],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v if v.endswith(".py") else "",
)
def test_bad_input_is_one_line(tmp_path, script, overrides, message):
    result = run_recipe(script, *overrides, cwd=tmp_path)
    assert result.returncode == 1
    errors = result.stderr.splitlines()  # exactly one line: no library warning beside it
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], result.stderr[-2000:]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # the failed run left nothing behind


def test_a_normal_run_prints_its_progress_and_one_line(tmp_path):
    """No library notice a user cannot act on (Gymnasium's -v4 deprecation, VecNormV2's experimental
    notice, TorchRL's INFO lines): stderr holds the progress bar, stdout the final line."""
    tiny = ["total_frames=1024", "frames_per_batch=1024", "ppo_epochs=1", "eval_episodes=1", "threads=1"]
    result = run_recipe("stppo_mujoco.py", "env=Hopper-v4", *tiny, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line[:5] for line in result.stdout.splitlines()] == ["done:"]
    progress = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert progress and all(line.startswith("ppo stac Hopper-v4:") for line in progress), result.stderr[-2000:]


def test_corrupted_checkpoint_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    bad = run_dir / "checkpoints" / "frames_000000001000.pt"
    bad.write_bytes(b"not a checkpoint")
    for location, message in [(bad, "the file is corrupted or truncated"), (run_dir, "every checkpoint is unreadable")]:
        result = run_recipe("stac_mujoco.py", f"resume={location}", cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert f"error: resume={location}: {message}" in result.stderr


def test_mujoco_missing_says_what_to_install(monkeypatch):
    from recipe_envs import check_env
    from recipe_schema import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mujoco" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'gymnasium\[mujoco\]'"):
        check_env("Walker2d-v4")


def test_evaluate_bad_input_is_one_line(tmp_path):
    cases = [
        ((), "error: checkpoint= is required (a run directory or one of its checkpoint files"),
        (("checkpoint=/no/such", "episodes=0"), "episodes=0 is not allowed"),
    ]
    for args, message in cases:
        result = run_recipe("evaluate.py", *args, cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr and list(tmp_path.iterdir()) == []


def test_a_second_writer_of_a_run_directory_is_one_line(tmp_path):
    """A live run holds its directory's lock: a second run (or an overlapping resume) stops in one line
    naming the holder, before it touches the logs or the checkpoints."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; h = open(sys.argv[1], 'a+'); fcntl.flock(h, fcntl.LOCK_EX); "
            "h.write('pid 4242 on test'); h.flush(); print('locked', flush=True); time.sleep(120)",
            str(tmp_path / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / "logs").mkdir()
        (tmp_path / "logs" / "live.csv").write_text("100,1.0\n")
        (tmp_path / ".hydra" / "live").mkdir(parents=True)
        (tmp_path / ".hydra" / "live" / "overrides.yaml").write_text("- seed=0\n")
        result = run_recipe("stac_mujoco.py", f"hydra.run.dir={tmp_path}", "total_frames=10", cwd=tmp_path)
    finally:
        holder.kill()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path} is in use by pid 4242 on test" in errors[0]
    assert (tmp_path / "logs" / "live.csv").read_text() == "100,1.0\n"
    assert not (tmp_path / "checkpoints").exists()
    assert [p.name for p in (tmp_path / ".hydra").iterdir()] == ["live"]  # the live run's record, alone
    assert (tmp_path / ".hydra" / "live" / "overrides.yaml").read_text() == "- seed=0\n"


@pytest.mark.parametrize("env", ["../../x", "Hopper-v4/../../../../x"])
def test_an_env_id_cannot_place_a_run_outside_the_working_directory(tmp_path, env):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    result = run_recipe("stac_mujoco.py", f"env={env}", cwd=cwd)
    assert result.returncode == 1 and "unknown Gymnasium environment" in result.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b"]


def test_a_crash_while_trimming_logs_loses_nothing(tmp_path, monkeypatch):
    """Resume trims the CSV logs to the checkpoint's frames, one atomic replace per file: a crash in the
    middle leaves each file whole (trimmed or not), and the next resume finishes the job."""
    import os

    from recipe_logs import trim_csv_logs

    rows = "".join(f"{frames},{frames / 10}\n" for frames in (100, 200, 300)) + "400,4"  # torn last line
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.csv").write_text(rows)
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("killed mid-trim")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(OSError, match="killed mid-trim"):
        trim_csv_logs(tmp_path, 200)
    monkeypatch.setattr(os, "replace", real_replace)
    trimmed = "100,10.0\n200,20.0\n"
    assert sorted((tmp_path / f"{n}.csv").read_text() for n in "abc") == sorted([trimmed, rows, rows])
    trim_csv_logs(tmp_path, 200)  # the resume that follows
    assert all((tmp_path / f"{n}.csv").read_text() == trimmed for n in "abc")
