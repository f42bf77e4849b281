"""The Stackelberg SAC recipe end to end with tiny budgets: both leaders, plain SAC, exact resume."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import gymnasium
import pytest
import torch
from tensordict import TensorDict

import recipe_models
from recipe_checkpoints import list_checkpoints, read_checkpoint
from recipe_envs import make_collector, make_env, start_fresh_episodes
from recipe_losses import TorchRLSAC
from recipe_models import glorot, make_sac_models
from recipe_schema import ConfigError, load_config, offpolicy_curvature, offpolicy_learning_rates, validate
from stsac_mujoco import train
from torchrl_stac import StackelbergSACLoss, plain_gradients

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


TINY = [
    "num_cells=[16,16]",
    "batch_size=16",
    "frames_per_batch=200",
    "utd_ratio=0.05",
    "eval_episodes=1",
    "eval_interval=200",
    "checkpoint_interval=200",
    "threads=1",
]


def csv_steps(run_dir: Path, name: str) -> list[int]:
    rows = (run_dir / "logs" / "scalars" / f"{name}.csv").read_text().splitlines()
    return [int(float(row.split(",")[0])) for row in rows]


@pytest.mark.parametrize("leader", ["actor", "critic"])
def test_short_run_updates_and_logs_the_implicit_diagnostics(tmp_path, leader):
    result = subprocess.run(
        [
            sys.executable,
            str(RECIPES / "stsac_mujoco.py"),
            f"leader={leader}",
            "total_frames=600",
            *TINY,
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"done: stsac ({leader} leads) on Hopper-v4, seed 0: 600 frames, 30 updates" in result.stdout
    # the warm-up is capped at 10% of the run (60 frames): every batch trains
    for name in ("implicit/correction_ratio", "implicit/solver_iterations", "implicit/loss_qvalue", "eval/return_mean"):
        assert csv_steps(tmp_path, name) == [200, 400, 600], name
    newest = list_checkpoints(tmp_path / "checkpoints")[0]
    state = read_checkpoint(newest)
    assert state["replay_buffer"] is not None and state["counters"]["updates"] == 30  # 3 batches × 200 × 0.05
    assert state["recipe"] == "stsac"
    # the saved config names the solve the leader's defaults chose (offpolicy_curvature)
    saved = (tmp_path / "config.yaml").read_text()
    solve = {"actor": ("exact", "none"), "critic": ("fisher", "condition")}[leader]
    assert f"hessian: {solve[0]}\n" in saved and f"regularization_decay: {solve[1]}\n" in saved
    # the 1M-slot buffer holds 600 rows: the checkpoint holds those, not the empty slots (~150 MB)
    assert newest.stat().st_size < 2_000_000
    evaluation = subprocess.run(
        [sys.executable, str(RECIPES / "evaluate.py"), f"checkpoint={tmp_path}", "episodes=2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "stsac_mujoco.py algo=stsac on Hopper-v4 (gymnasium) after 600 frames" in evaluation.stdout


@pytest.mark.parametrize("algo", ["td3", "sttd3", "ddpg", "stddpg"])
def test_td3_and_ddpg_and_their_stackelberg_twins_train_log_and_evaluate(tmp_path, algo):
    result = subprocess.run(
        [sys.executable, str(RECIPES / "stsac_mujoco.py"), f"algo={algo}", "total_frames=600", *TINY]
        + [f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    label = f"{algo} (actor leads)" if algo.startswith("st") else algo
    assert f"done: {label} on Hopper-v4, seed 0: 600 frames, 30 updates" in result.stdout
    logged = "implicit/correction_ratio" if algo.startswith("st") else f"{algo}/loss_qvalue"
    assert csv_steps(tmp_path, logged) == [200, 400, 600]
    state = read_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])
    critics = {key.split(".")[1] for key in state["losses"] if key.startswith("qvalue_networks.")}
    assert len(critics) == (1 if algo.endswith("ddpg") else 2)
    evaluation = subprocess.run(
        [sys.executable, str(RECIPES / "evaluate.py"), f"checkpoint={tmp_path}", "episodes=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert f"stsac_mujoco.py algo={algo} on Hopper-v4" in evaluation.stdout


def test_plain_sac_and_exact_resume_with_the_replay_buffer(tmp_path):
    common = ["algo=sac", *TINY]
    straight = train(load_config("config_stsac", [*common, "total_frames=600"]), tmp_path / "straight")
    train(load_config("config_stsac", [*common, "total_frames=400"]), tmp_path / "first")
    resumed = train(load_config("config_stsac", [*common, "total_frames=600", f"resume={tmp_path / 'first'}"]), None)
    a, b = read_checkpoint(straight["checkpoint"]), read_checkpoint(resumed["checkpoint"])
    for key, value in a["losses"].items():
        assert torch.equal(value, b["losses"][key]), f"{key} differs after resume"
    assert a["counters"] == b["counters"]


def test_per_step_updates_write_a_row_of_means_every_log_interval(tmp_path, capsys):
    """The default schedule, one update after every env step, writes one row per ``log_interval``
    frames (and at checkpoints), each the mean over the updates since the last, not one per step;
    its progress bar is redrawn at most once a second, not after every step."""
    per_step = ["frames_per_batch=1", "utd_ratio=1", "log_interval=50", "total_frames=150"]
    overrides = ["algo=sac", *TINY, *per_step, "eval_interval=150", "checkpoint_interval=150"]
    summary = train(load_config("config_stsac", overrides), tmp_path)
    assert summary["updates"] == 150 - 14  # one after every step from the warm-up's last (10% of the run: 15)
    assert csv_steps(tmp_path, "sac/loss_qvalue") == [50, 100, 150]
    assert csv_steps(tmp_path, "time/update") == [50, 100, 150]
    assert set(csv_steps(tmp_path, "train/episode_return")) <= {50, 100, 150}  # episodes since the last row
    assert csv_steps(tmp_path, "eval/return_mean") == [150]
    bar = capsys.readouterr().err
    assert "150/150" in bar and bar.count("\r") <= 3 + summary["wall_seconds"]  # start, end, 1/s


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["algo=stsac"], ("exact", "none")),
        (["algo=stsac", "leader=critic"], ("fisher", "condition")),
        (["algo=sttd3", "leader=critic"], ("exact", "none")),  # TD3's actor is deterministic: no Fisher
        (["algo=stddpg", "leader=critic"], ("exact", "none")),
        (["algo=stsac", "leader=critic", "hessian=exact"], ("exact", "none")),
        (["algo=stsac", "leader=critic", "regularization_decay=none"], ("fisher", "none")),
        (["algo=stsac", "regularization_decay=condition"], ("exact", "condition")),
    ],
)
def test_each_leader_gets_its_own_curvature_unless_configured(overrides, expected):
    """Null ``hessian`` / ``regularization_decay``: SAC's critic leader inverts the policy's Fisher
    information with λ from the conditioning (with its exact Hessian and λ = 1 it lost to SAC on HalfCheetah,
    benchmarks/RESULTS.md); every other leader the exact Hessian with a constant λ. An explicit value wins."""
    assert offpolicy_curvature(load_config("config_stsac", overrides)) == expected


def test_a_bad_curvature_key_says_what_null_means():
    with pytest.raises(ConfigError, match=r"'fisher' \(null: the leader's own\)\.$"):
        validate(load_config("config_stsac", ["hessian=diag"]))
    with pytest.raises(ConfigError, match=r"'condition' \(null: the leader's own\)\.$"):
        validate(load_config("config_stsac", ["regularization_decay=linear"]))


def test_critic_leader_rejects_gauss_newton():
    with pytest.raises(ConfigError, match="no Gauss-Newton form"):
        train(load_config("config_stsac", ["leader=critic", "hessian=gauss_newton", *TINY]), None)


@pytest.mark.parametrize(
    "config,overrides",
    [
        ("config_mujoco", ["env=Hopper-v4", "critic_steps=3", "num_envs=2", "collector_workers=1"]),
        ("config_stppo", ["env=Hopper-v4", "num_envs=4", "ppo_minibatch_size=50", "ppo_epochs=1"]),
        ("config_stsac", [*TINY, "utd_ratio=0.2", "init_random_frames=200"]),
        ("config_stsac", [*TINY, "utd_ratio=0.2", "init_random_frames=200", "leader=critic", "hessian=fisher"]),
    ],
    ids=["stac", "stppo", "stsac_actor", "stsac_critic_fisher"],
)
def test_every_recipe_takes_its_lambda_from_the_condition_number(tmp_path, config, overrides):
    """``regularization_decay=condition condition_number=100``: λ, μ_min and μ_max are logged per
    batch, λ = max(floor, (μ_max − 100 μ_min)/99) as logged, and λ changes over the run."""
    import stac_mujoco
    import stppo_mujoco
    import stsac_mujoco

    train = {"config_mujoco": stac_mujoco, "config_stppo": stppo_mujoco, "config_stsac": stsac_mujoco}[config].train
    common = ["total_frames=800", "frames_per_batch=200", "eval_episodes=1", "eval_interval=800", "threads=1"]
    cfg = load_config(config, [*common, *overrides, "regularization_decay=condition", "condition_number=100"])
    train(cfg, tmp_path)
    values = {
        name: [
            float(row.split(",")[1])
            for row in (tmp_path / "logs" / "scalars" / "implicit" / f"{name}.csv").read_text().splitlines()
        ]
        for name in ("regularization", "hessian_eigenvalue_min", "hessian_eigenvalue_max")
    }
    lam, low, high = values["regularization"], values["hessian_eigenvalue_min"], values["hessian_eigenvalue_max"]
    assert len(lam) >= 3 and len(set(lam)) == len(lam)  # one λ per batch, and it moves
    # λ is linear in (μ_min, μ_max) above the floor 0, so the per-batch means (over the corrected updates
    # alone; SAC's plain updates in between log no λ) keep the formula
    for value, mu_min, mu_max in zip(lam, low, high, strict=True):
        assert value == pytest.approx(max(0.0, (mu_max - 100 * mu_min) / 99), rel=1e-4)
    if "hessian=fisher" in overrides:
        assert min(low) > -1e-6  # the Fisher matrix is positive semi-definite


def test_our_plain_sac_gradients_are_torchrl_sacloss_in_expectation():
    """The base check: on one large minibatch and the same networks (α fixed), our SAC's plain
    gradients match TorchRL's own SACLoss (l2), which draws its own noise: the Monte-Carlo error of
    32768 draws, not a different loss, separates them."""
    torch.manual_seed(0)
    env = make_env("Hopper-v4", 1)
    actor, critics = make_sac_models(env, [32, 32], "cpu")
    cfg = load_config("config_stsac", ["algo=sac", "reference_loss=true", "fixed_alpha=true", "alpha_init=0.2"])
    ours = StackelbergSACLoss(actor, critics, gamma=cfg.gamma, alpha_init=cfg.alpha_init, fixed_alpha=True)
    reference = TorchRLSAC(actor, critics[0], env.action_spec_unbatched, cfg)  # shares the actor
    with torch.no_grad():  # the same twin critics and (perturbed) targets in both
        for target in ours.target_qvalue_networks:
            for p in target.parameters():
                p.add_(0.01 * torch.randn_like(p))
        stacked = [
            torch.stack([TensorDict.from_module(q).data for q in qs]) for qs in (critics, ours.target_qvalue_networks)
        ]
        reference.sac.qvalue_network_params.data.copy_(stacked[0])
        reference.sac.target_qvalue_network_params.data.copy_(stacked[1])
    size, gen = 32768, torch.Generator().manual_seed(1)
    terminated = torch.rand(size, 1, generator=gen) < 0.1
    batch = TensorDict(
        {
            "observation": torch.randn(size, 11, generator=gen),
            "action": torch.rand(size, 3, generator=gen) * 2 - 1,
            ("next", "observation"): torch.randn(size, 11, generator=gen),
            ("next", "reward"): torch.randn(size, 1, generator=gen),
            ("next", "terminated"): terminated,
            ("next", "done"): terminated.clone(),
        },
        [size],
    )
    ours_out = plain_gradients(ours, batch.clone())
    ours_actor = torch.cat([p.grad.reshape(-1) for p in actor.parameters()])
    ours_critic = torch.cat([p.grad.reshape(-1) for q in critics for p in q.parameters()])
    reference_out = plain_gradients(reference, batch.clone())
    reference_actor = torch.cat([p.grad.reshape(-1) for p in actor.parameters()])
    grads = reference.sac.qvalue_network_params.apply(lambda p: p.grad)
    reference_critic = torch.cat([torch.cat([g[j].reshape(-1) for g in grads.values(True, True)]) for j in range(2)])
    assert torch.isclose(ours_out["loss_qvalue"], reference_out["loss_qvalue"], rtol=0.01)
    for mine, theirs, cosine in ((ours_actor, reference_actor, 0.99), (ours_critic, reference_critic, 0.9999)):
        assert torch.nn.functional.cosine_similarity(mine, theirs, 0) > cosine
        assert 0.94 < mine.norm() / theirs.norm() < 1.06


def test_the_sac_actor_scale_mapping_is_torchrl_biased_softplus_or_exp():
    """``scale_mapping``: the actor's pre-tanh standard deviation from the MLP's second half, by
    TorchRL's biased softplus (softplus(x + b) + 0.01 with softplus(b) = 0.99: never below 0.01,
    whatever ``scale_lb``) or by exp (SB3's and Tianshou's log-std), floored at ``scale_lb``."""
    env = make_env("Hopper-v4", 1)
    observation = 10.0 * torch.randn(256, 11, generator=torch.Generator().manual_seed(0))
    bias = math.log(math.expm1(0.99))
    scales = {}
    for mapping, expected in (
        ("biased_softplus_1.0", lambda raw: torch.nn.functional.softplus(raw + bias) + 0.01),
        ("exp", torch.exp),
    ):
        torch.manual_seed(0)  # the same weights for both mappings
        actor, _ = make_sac_models(env, [16], "cpu", scale_lb=0.05, scale_mapping=mapping)
        with torch.no_grad():
            raw = actor.module[0].module[0](observation)[..., 3:]  # the MLP's second half: the raw scale
            scales[mapping] = actor(TensorDict({"observation": observation}, [256]))["scale"]
        torch.testing.assert_close(scales[mapping], expected(raw).clamp_min(0.05))
    assert (scales["exp"] == 0.05).any()  # the floor acts
    assert not torch.allclose(scales["exp"], scales["biased_softplus_1.0"])


def test_replay_rows_mark_falls_terminal_and_nothing_else(tmp_path):
    """What the SAC loop stores: ``terminated`` exactly where Hopper's health check fails at the next
    state, time-limit ends ``truncated`` only, the stored next observation the real one (the next
    row continues from it unless the episode ended), and a checkpoint's fresh episodes mark nothing."""
    gymnasium.register("HopperShort-v4", "gymnasium.envs.mujoco.hopper_v4:HopperEnv", max_episode_steps=15)
    env = make_env("HopperShort-v4", 1)
    actor, _ = make_sac_models(env, [16], "cpu")
    collector = make_collector("HopperShort-v4", actor, frames_per_batch=600, total_frames=1200)
    collector.init_random_frames = 1200  # uniform actions, as in the warm-up
    first, second = None, None
    for index, batch in enumerate(collector):
        if index == 0:
            first = batch
            start_fresh_episodes(collector, 7)  # what a checkpoint does
        else:
            second = batch
    collector.shutdown()
    for rows in (first, second):
        next_obs = rows["next", "observation"]
        z, angle = next_obs[:, 0], next_obs[:, 1]
        unhealthy = (z <= 0.7) | (angle.abs() >= 0.2) | (next_obs[:, 1:5].abs() >= 100).any(-1)
        terminated = rows["next", "terminated"].squeeze(-1)
        truncated = rows["next", "truncated"].squeeze(-1)
        assert torch.equal(terminated, unhealthy)
        assert terminated.any() and truncated.any()
        at_limit = rows["next", "step_count"].squeeze(-1) == 15
        assert torch.equal(truncated, at_limit)  # gymnasium flags the limit even where the hopper also fell
        assert (truncated & ~terminated).any()  # time-limit ends that the target bootstraps through
        done = rows["next", "done"].squeeze(-1)
        assert torch.equal(done, terminated | truncated)
        continues = ~done[:-1]
        assert torch.equal(rows["observation"][1:][continues], next_obs[:-1][continues])
        restarts = rows["observation"][1:][done[:-1]]
        assert torch.allclose(restarts[:, 0], torch.full_like(restarts[:, 0], 1.25), atol=0.01)  # a reset's height
    # the restart ends the cut episode without a flag (the checks above cover the first batch's last
    # row); the next batch starts a fresh episode
    assert second["step_count"][0].item() == 0


def test_reference_loss_trains_in_the_recipe_loop_and_is_plain_sac_only(tmp_path):
    summary = train(
        load_config("config_stsac", ["algo=sac", "reference_loss=true", "total_frames=400", *TINY]), tmp_path
    )
    state = read_checkpoint(summary["checkpoint"])
    assert state["counters"]["updates"] == 20 and any(key.startswith("sac.") for key in state["losses"])
    assert csv_steps(tmp_path, "sac/loss_qvalue") == [200, 400]
    for overrides in (["algo=stsac"], ["algo=sac", "update_order=critic_first"]):
        with pytest.raises(ConfigError, match="reference_loss=true is TorchRL's plain SACLoss"):
            train(load_config("config_stsac", [*overrides, "reference_loss=true", *TINY]), None)


def test_defaults_are_tianshous_sac_settings_and_each_base_gets_its_own_learning_rate():
    """The fix of the SAC base (benchmarks/RESULTS.md): Adam 1e-3 and α fixed at 0.2, where TorchRL's
    settings (3e-4, α learnt from 1.0) stalled on Hopper, and one update after every env step, where 50
    after every 50 fell back from its peaks; TD3 likewise learns earlier at 1e-3 than at its paper's 3e-4
    on HalfCheetah; an explicit value wins."""
    cfg = load_config("config_stsac", ["algo=sac"])
    assert (cfg.alpha_init, cfg.fixed_alpha, cfg.init_random_frames) == (0.2, True, 10_000)
    assert (cfg.frames_per_batch, cfg.utd_ratio) == (1, 1.0)
    assert offpolicy_learning_rates(cfg) == (1e-3, 1e-3)
    assert offpolicy_learning_rates(load_config("config_stsac", ["algo=stsac"])) == (1e-3, 1e-3)
    assert offpolicy_learning_rates(load_config("config_stsac", ["algo=sttd3"])) == (1e-3, 1e-3)
    assert offpolicy_learning_rates(load_config("config_stsac", ["algo=td3", "actor_lr=3e-4"])) == (3e-4, 1e-3)
    assert offpolicy_learning_rates(load_config("config_stsac", ["algo=ddpg", "critic_lr=0.002"])) == (1e-3, 2e-3)
    with pytest.raises(ConfigError, match="actor_lr=0.0 is not allowed: expected null or a finite number > 0"):
        validate(load_config("config_stsac", ["actor_lr=0"]))


def test_glorot_draws_the_sac_authors_initialisation():
    """Glorot-uniform weights, U(±√(6 / (fan_in + fan_out))), and zero biases in every linear layer,
    where PyTorch's default draws both from U(±1/√fan_in)."""
    torch.manual_seed(0)
    actor, critics = make_sac_models(make_env("Hopper-v4", 1), [256, 256], "cpu")
    for net in (actor, *critics):
        linears = [layer for layer in net.modules() if isinstance(layer, torch.nn.Linear)]
        assert len(linears) == 3 and all(layer.bias.abs().sum() > 0 for layer in linears)  # PyTorch's draw
        glorot(net)
        for layer in linears:
            fan_out, fan_in = layer.weight.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
            assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound
            assert abs(layer.weight.std().item() - bound / math.sqrt(3.0)) < 0.05 * bound  # uniform's std


@pytest.mark.parametrize("init,initialised", [("torch", 0), ("glorot", 3)])
def test_network_init_reaches_the_actor_and_both_critics(tmp_path, monkeypatch, init, initialised):
    seen = []
    monkeypatch.setattr(recipe_models, "glorot", lambda net: seen.append(net) or glorot(net))
    train(load_config("config_stsac", ["algo=sac", f"network_init={init}", "total_frames=200", *TINY]), tmp_path)
    assert len(seen) == initialised and len({id(net) for net in seen}) == initialised
