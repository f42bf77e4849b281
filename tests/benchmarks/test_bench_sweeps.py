"""Hydra multiruns of the recipes on real launchers, and the benchmark drivers built on them."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench_ppo
import bench_sample_efficiency
from recipe_checkpoints import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]


TINY = ["total_frames=2000", "eval_interval=1000", "eval_episodes=1", "threads=1", "num_envs=2"]


def multirun(tmp_path: Path, launcher: list[str], *extra: str) -> subprocess.CompletedProcess:
    """``stac_cartpole.py -m seed=0,1`` into ``tmp_path/sweep`` with resume=auto."""
    command = [
        sys.executable,
        str(ROOT / "recipes" / "stac_cartpole.py"),
        "-m",
        "seed=0,1",
        *TINY,
        "resume=auto",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *launcher,
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)


def assert_two_complete_runs(sweep: Path) -> None:
    runs = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert [run.name for run in runs] == [f"num_envs=2,seed={s},total_frames=2000" for s in (0, 1)]
    finals = []
    for seed, run in enumerate(runs):
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["seed"], summary["frames"]) == (seed, 2000)
        assert (run / "checkpoints" / "frames_000000002000.pt").is_file()
        rows = (run / "logs" / "scalars" / "eval" / "return_mean.csv").read_text().splitlines()
        assert [int(float(row.split(",")[0])) for row in rows] == [1000, 2000]
        finals.append(read_checkpoint(run / "checkpoints" / "frames_000000002000.pt")["actor"])
    assert any(not torch.equal(a, b) for a, b in zip(finals[0].values(), finals[1].values(), strict=True))


def test_joblib_multirun_gives_two_complete_run_directories_and_skips_them_when_relaunched(tmp_path):
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    result = multirun(tmp_path, launcher)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert_two_complete_runs(tmp_path / "sweep")
    again = multirun(tmp_path, launcher)  # resume=auto: both runs are complete, nothing is trained
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("already holds 2000 frames: nothing to train") == 2
    assert_two_complete_runs(tmp_path / "sweep")


def test_ray_launcher_multirun_on_a_local_ray_instance(tmp_path):
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("hydra-ray-launcher is not installed (pip install -e '.[ray]')")
    import ray

    try:
        ray.init(num_cpus=2, include_dashboard=False)
    except Exception as error:  # noqa: BLE001 - any reason Ray cannot start here
        pytest.skip(f"Ray cannot start on this machine: {error}")
    ray.shutdown()
    result = multirun(tmp_path, ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert_two_complete_runs(tmp_path / "sweep")


def test_ppo_driver_runs_the_missing_runs_through_the_sweep_and_skips_finished_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_ppo, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench_ppo, "RUNS", tmp_path / "runs")
    args = argparse.Namespace(
        envs="Hopper-v4", algos="ac,stac", seeds="0", tag="", frames=2048, jobs=2, launcher="joblib",
        overrides=["ppo_epochs=1", "eval_episodes=1", "num_envs=2"],
    )  # fmt: skip
    bench_ppo.command_run(args)
    for algo in ("ac", "stac"):
        record = json.loads((tmp_path / "results" / f"Hopper-v4_{algo}_seed0.json").read_text())
        assert record["eval_curve"][-1][0] == 2048 and record["algo"] == algo
        assert "ppo_epochs=1" in record["overrides"]
    assert "correction_ratio_curve" in record  # the Stackelberg run logged its correction
    bench_ppo.command_run(args)
    assert "0 runs to do" in capsys.readouterr().out


def test_sample_efficiency_driver_uses_one_multirun_per_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_sample_efficiency, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench_sample_efficiency, "RUNS", tmp_path / "runs")
    tiny = ["total_frames=2000", "eval_interval=1000", "eval_episodes=1", "num_envs=2"]
    monkeypatch.setattr(bench_sample_efficiency, "CELLS", {"tiny": ("config_cartpole", tiny, "CartPole, tiny")})
    options = dict(only="", seeds="0", k="1", jobs=2, launcher="joblib")
    bench_sample_efficiency.command_run(argparse.Namespace(**options, algos="stac,ac", tag="", overrides=[]))
    for algo in ("stac", "ac"):
        record = json.loads(bench_sample_efficiency.result_path("tiny", algo, 1, 0).read_text())
        assert [frames for frames, _ in record["eval_curve"]] == [1000, 2000]
        assert (record["config"]["algo"], record["config"]["critic_steps"]) == (algo, 1)
    # extra overrides make a tagged variant with its own files; without a tag they are refused
    with pytest.raises(SystemExit, match="name the variant with --tag"):
        bench_sample_efficiency.command_run(argparse.Namespace(**options, algos="stac", tag="", overrides=["k=1"]))
    tagged = argparse.Namespace(**options, algos="stac", tag="lam2", overrides=["regularization=2.0"])
    bench_sample_efficiency.command_run(tagged)
    record = json.loads(bench_sample_efficiency.result_path("tiny", "stac_lam2", 1, 0).read_text())
    assert (record["algo"], record["config"]["algo"], record["config"]["regularization"]) == ("stac_lam2", "stac", 2.0)
    assert record["overrides"] == ["regularization=2.0"]
    groups = bench_sample_efficiency.load_runs()
    assert sorted(algo for _, algo, _ in groups) == ["ac", "stac", "stac_lam2"]  # never pooled


def test_offpolicy_driver_records_curves_and_stackelberg_diagnostics(tmp_path, monkeypatch):
    import bench_offpolicy

    monkeypatch.setattr(bench_offpolicy, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench_offpolicy, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(bench_offpolicy, "EVAL", ["eval_interval=200", "eval_episodes=1"])
    args = argparse.Namespace(
        envs="Hopper-v4", variants="sac,stsac_critic,sttd3_actor", seeds="0", tag="", frames=400, jobs=2,
        launcher="joblib",
        overrides=[
            "frames_per_batch=100", "log_interval=100", "batch_size=32", "num_cells=[16,16]", "correction_every=1"
        ],
    )  # fmt: skip
    bench_offpolicy.command_run(args)
    sac = json.loads((tmp_path / "results" / "Hopper-v4_sac_seed0.json").read_text())
    stsac = json.loads((tmp_path / "results" / "Hopper-v4_stsac_critic_seed0.json").read_text())
    assert [frames for frames, _ in stsac["eval_curve"]] == [200, 400]
    assert "leader: critic" in stsac["config"] and "algo: stsac" in stsac["config"]
    assert (
        len(stsac["diagnostics"]["correction_ratio"]) == 4
    )  # a row per batch (log_interval=100): the warm-up (40 frames) ends in the first
    assert sac["diagnostics"] == {}
    sttd3 = json.loads((tmp_path / "results" / "Hopper-v4_sttd3_actor_seed0.json").read_text())
    assert "algo: sttd3" in sttd3["config"] and sttd3["diagnostics"]["correction_ratio"]
    progress = bench_offpolicy.matrix_progress()  # the TD3 rows and the DDPG anchor are planned too
    assert "HalfCheetah-v4_td3_seed2" in progress and "HalfCheetah-v4_ddpg_seed1" in progress
    assert "HalfCheetah-v4_ddpg_seed2" not in progress and "Hopper-v4_sac_seed4" in progress


def test_retag_moves_runs_apart_and_admits_to_the_default_group_only_runs_with_todays_effective_config(
    tmp_path, monkeypatch
):
    from omegaconf import OmegaConf

    import bench_offpolicy
    from recipe_schema import StsacConfig

    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(bench_offpolicy, "RESULTS", results)

    def record(name: str, tag: str, **config) -> None:
        cfg = OmegaConf.merge(OmegaConf.structured(StsacConfig), {"algo": "sac", "total_frames": 100_000, **config})
        body = {"env": "Hopper-v4", "variant": "sac", "tag": tag, "seed": 0, "eval_curve": [[100_000, 1.0]]}
        (results / f"{name}.json").write_text(json.dumps({**body, "config": OmegaConf.to_yaml(cfg)}))

    def retag(from_tag: str, to_tag: str) -> None:
        bench_offpolicy.command_retag(argparse.Namespace(variants="sac", from_tag=from_tag, to_tag=to_tag))

    record("Hopper-v4_sac_seed0", "", actor_lr=3e-4, critic_lr=3e-4)  # before a change of defaults
    record("Hopper-v4_sac_explicit_seed0", "explicit", actor_lr=1e-3, init_random_frames=25_000)  # = today's
    record("Hopper-v4_sac_other_seed0", "other", tau=0.01)
    with pytest.raises(SystemExit, match="Hopper-v4_sac_seed0.json exists"):
        retag("explicit", "")
    retag("", "before")
    with pytest.raises(SystemExit, match=r"differs from today's defaults in \['tau'\]"):
        retag("other", "")
    retag("explicit", "")
    moved = json.loads((results / "Hopper-v4_sac_seed0.json").read_text())
    assert (moved["tag"], moved["retagged_from"], moved["eval_curve"]) == ("", "explicit", [[100_000, 1.0]])
    before = json.loads((results / "Hopper-v4_sac_before_seed0.json").read_text())
    assert (before["tag"], before["retagged_from"]) == ("before", "")
    assert sorted(p.name for p in results.iterdir()) == [
        "Hopper-v4_sac_before_seed0.json", "Hopper-v4_sac_other_seed0.json", "Hopper-v4_sac_seed0.json"
    ]  # fmt: skip


def test_launch_polls_while_the_sweep_runs_so_finished_runs_are_collected_before_it_ends(tmp_path):
    import bench_sweep

    runs = {"first": {"seed": 0}, "second": {"seed": 1}}
    seen = []  # at each poll: which runs were completed (last checkpoint and summary written)

    def poll() -> None:
        seen.append(tuple(bench_sweep.completed(tmp_path / name, 2000) for name in runs))

    common = [*TINY, "logger=csv"]
    result = bench_sweep.launch("stac_cartpole.py", "config_cartpole", runs, tmp_path, common, "joblib", 1, poll, 0.2)
    assert result.returncode == 0, bench_sweep.log_tail(tmp_path)
    assert (True, False) in seen  # the first run was collectable while the second still trained
    assert all(bench_sweep.completed(tmp_path / name, 2000) for name in runs)


def test_a_run_with_its_last_checkpoint_but_no_summary_is_finished_but_not_completed(tmp_path):
    import bench_sweep

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "frames_000000002000.pt").write_bytes(b"")
    assert bench_sweep.finished(tmp_path, 2000) and not bench_sweep.completed(tmp_path, 2000)
    (tmp_path / "summary.json").write_text("{}")
    assert bench_sweep.completed(tmp_path, 2000) and not bench_sweep.completed(tmp_path, 4000)


def test_collect_writes_only_the_missing_result_files_of_ready_runs_and_names_the_rest(tmp_path, capsys):
    import bench_sweep

    def run_dir(name: str, checkpoint_frames: int, summary: bool) -> Path:
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / f"frames_{checkpoint_frames:012d}.pt").write_bytes(b"")
        if summary:
            (tmp_path / name / "summary.json").write_text("{}")
        return tmp_path / name

    written = []

    def result(name: str, checkpoint_frames: int, summary: bool) -> bench_sweep.Result:
        def write() -> str:
            written.append(name)
            bench_sweep.write_json(tmp_path / f"{name}.json", {})
            return f"{name}: written"

        return bench_sweep.Result(tmp_path / f"{name}.json", run_dir(name, checkpoint_frames, summary), 2000, write)

    results = {
        "done": result("done", 2000, summary=True),
        "midway": result("midway", 1000, summary=True),
        "saving": result("saving", 2000, summary=False),  # last checkpoint written, process not done
        "collected": result("collected", 2000, summary=True),
    }
    bench_sweep.write_json(tmp_path / "collected.json", {"kept": True})
    assert bench_sweep.collect(results) == ["midway", "saving"] and written == ["done"]
    assert bench_sweep.collect(results, bench_sweep.finished) == ["midway"] and written == ["done", "saving"]
    assert json.loads((tmp_path / "collected.json").read_text()) == {"kept": True}
    assert capsys.readouterr().out.splitlines() == ["done: written", "saving: written"]
