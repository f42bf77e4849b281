"""The recipes end to end with tiny budgets, resume equality, and bad-input errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(RECIPES))

from common import ConfigError, check_config, train  # noqa: E402
from common import load_config as config  # noqa: E402

TINY = ["critic_steps=2", "eval_episodes=1", "threads=1", "num_envs=2", "collector_workers=1"]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RECIPES / script), *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.parametrize(
    "script,env",
    [("stac_mujoco.py", "Hopper-v4"), ("stac_mujoco.py", "Reacher-v4"), ("stac_cartpole.py", "CartPole-v1")],
)
def test_recipe_end_to_end_writes_logs_and_checkpoint(tmp_path, script, env):
    result = run_script(
        script,
        f"env={env}",
        "total_frames=400",
        "frames_per_batch=200",
        "eval_interval=200",
        "checkpoint_interval=200",
        *TINY,
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done: stac on" in result.stdout
    scalars = tmp_path / "logs" / "scalars"
    for name in (
        "eval/return_mean",
        "loss/critic",
        "loss/objective",
        "implicit/correction_ratio",
        "implicit/solver_iterations",
        "time/collect",
        "time/critic",
        "time/implicit",
        "time/actor",
    ):
        rows = (scalars / f"{name}.csv").read_text().strip().splitlines()
        assert len(rows) == 2, name  # one row per iteration
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "config.yaml").is_file()
    evaluation = run_script("evaluate.py", f"checkpoint={tmp_path}", "episodes=2")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert f"stac on {env} after 400 frames: return" in evaluation.stdout


def test_collector_workers_train(tmp_path):
    overrides = [*TINY, "num_envs=4", "collector_workers=2", "total_frames=400", "frames_per_batch=200"]
    cfg = config("config_mujoco", overrides)
    summary = train(cfg, tmp_path)
    assert summary["frames"] == 400


def test_minibatch_critic_uses_the_replay_buffer(tmp_path, monkeypatch):
    import common

    sampled = []
    original = common.ReplayBuffer.sample

    def spy(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        sampled.append(batch.shape)
        return batch

    monkeypatch.setattr(common.ReplayBuffer, "sample", spy)
    cfg = config("config_cartpole", ["total_frames=200", "frames_per_batch=100", "critic_minibatch_size=25", *TINY])
    train(cfg, tmp_path)
    assert sampled == [torch.Size([25])] * 4  # 2 iterations × critic_steps=2


@pytest.mark.parametrize("name,algo", [("config_cartpole", "stac"), ("config_mujoco", "ac")])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, name, algo):
    common = [f"algo={algo}", "frames_per_batch=100", "eval_interval=100", "checkpoint_interval=100", *TINY]
    straight = train(config(name, [*common, "total_frames=300"]), tmp_path / "straight")
    train(config(name, [*common, "total_frames=200"]), tmp_path / "first")
    resumed = train(config(name, [*common, "total_frames=300", f"resume={tmp_path / 'first'}"]), tmp_path / "resumed")
    a, b = torch.load(straight["checkpoint"], weights_only=False), torch.load(resumed["checkpoint"], weights_only=False)
    assert a["counters"] == b["counters"] == {"frames": 300, "iterations": 3, "evaluations": 3}
    for part in ("actor", "critic"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["actor_optimizer"]["state"].keys() == b["actor_optimizer"]["state"].keys()


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["env=Hoper-v4"], "Did you mean Hopper-v4"),
        (["env=NoSuchEnv-v0"], "unknown Gymnasium environment"),
        (["critic_steps=0"], "critic_steps"),
        (["regularization=-1"], "regularization"),
        (["frames_per_batch=0"], "frames_per_batch"),
        (["algo=ppo"], "algo"),
        (["logger=neptune"], "logger"),
        (["resume=/no/such/run"], "no checkpoint"),
    ],
)
def test_bad_config_rejected_before_training(overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_config(config("config_mujoco", overrides))


def test_mujoco_missing_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mujoco" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'gymnasium\[mujoco\]'"):
        check_config(config("config_mujoco", ["env=Walker2d-v4"]))


def test_resume_from_another_env_rejected(tmp_path):
    train(config("config_cartpole", ["total_frames=100", "frames_per_batch=100", *TINY]), tmp_path)
    with pytest.raises(ConfigError, match="trained on CartPole-v1"):
        check_config(config("config_mujoco", [f"resume={tmp_path}"]))


def test_cli_error_is_one_clear_line(tmp_path):
    result = run_script("stac_mujoco.py", "env=Hoper-v4", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "error: unknown Gymnasium environment 'Hoper-v4'. Did you mean Hopper-v4" in result.stderr
    assert "Traceback" not in result.stderr


def test_collector_workers_act_with_the_latest_weights():
    from common import make_collector, make_env, make_models, start_fresh_episodes

    cfg = config("config_mujoco", [*TINY, "num_envs=4", "collector_workers=2", "frames_per_batch=200"])
    actor, _ = make_models(make_env(cfg.env), cfg.num_cells, "cpu")
    collector = make_collector(cfg, actor, total_frames=400)
    start_fresh_episodes(collector, 0)
    for batch in collector:
        assert batch.shape == (2, 2, 50)
        with torch.no_grad():
            loc = actor.module[0](batch.select("observation").clone())["loc"]
            torch.testing.assert_close(batch["loc"], loc)  # on-policy: the batch used the current weights
            for parameter in actor.parameters():
                parameter.add_(0.1)  # the next batch must use these
    collector.shutdown()
