"""Stackelberg SAC (``algo=stsac``, ``leader=actor|critic``) or plain SAC (``algo=sac``) on MuJoCo.

python recipes/stsac_mujoco.py env=Hopper-v4                       # the actor leads
python recipes/stsac_mujoco.py env=Hopper-v4 leader=critic         # the critic leads
python recipes/stsac_mujoco.py env=Hopper-v4 algo=sac              # plain SAC (TorchRL's settings)

Every key of ``recipe_schema.StsacConfig`` is a ``key=value`` override; ``config_stsac.yaml`` is the
preset. The builders are shared with ``stac_mujoco.py``; only the loop below differs: collect
``frames_per_batch`` steps into a replay buffer, then ``utd_ratio`` updates per step, each on one
minibatch and one noise draw for both players (leader: total derivative; follower: its own
gradient; α: its own loss), then Polyak-averaged targets.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torchrl.data import LazyTensorStorage, ReplayBuffer

import recipe_cli
from recipe_checkpoints import complete, restore, resume_point, seed_everything, write_checkpoint
from recipe_envs import check_env, make_collector, make_env
from recipe_evaluation import evaluate
from recipe_logs import PhaseTimer, make_logger
from recipe_losses import make_optimizer, make_sac
from recipe_models import make_sac_models
from recipe_schema import validate
from recipe_tracker import RunTracker
from torchrl_stac import plain_gradients


def critic_first_step(loss, minibatch, critic_opt) -> dict[str, torch.Tensor]:
    """Step the critics on their loss first, then set the actor's and α's gradients with the stepped critics."""
    loss.draw_noise(minibatch)
    loss_qvalue = loss.qvalue_loss(minibatch)
    critic_opt.zero_grad(set_to_none=True)
    loss_qvalue.backward(inputs=loss.critic_params)
    critic_opt.step()
    critic_opt.zero_grad(set_to_none=True)
    losses = plain_gradients(loss, minibatch)
    for param in loss.critic_params:  # the critics stepped already
        param.grad = None
    return {"loss_qvalue": loss_qvalue.detach(), "loss_actor": losses["loss_actor"]}


def train(cfg: DictConfig, run_dir: Path | None) -> dict[str, Any]:
    """Train as configured into ``run_dir`` (or, with ``resume=``, the resumed run's directory)."""
    # ---- check everything before building anything
    validate(cfg)
    check_env(cfg.env)
    resumed, resumed_from, run_dir = resume_point(cfg, run_dir)
    if complete(cfg, resumed):  # resume=auto on a finished run (e.g. a relaunched sweep)
        print(f"{run_dir} already holds {resumed['counters']['frames']} frames: nothing to train", flush=True)
        return {"frames": resumed["counters"]["frames"], "run_dir": str(run_dir)}

    # ---- build: networks, the two players' losses, the Stackelberg update, optimizers, replay buffer
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    eval_env = make_env(cfg.env, 1, cfg.device)
    actor, critics = make_sac_models(eval_env, cfg.num_cells, cfg.device, cfg.scale_lb)
    loss, stackelberg = make_sac(cfg, actor, critics)
    actor_opt = make_optimizer("adam", loss.actor_params, cfg.actor_lr)
    critic_opt = make_optimizer("adam", loss.critic_params, cfg.critic_lr)
    alpha_opt = make_optimizer("adam", [loss.log_alpha], cfg.alpha_lr)
    replay = ReplayBuffer(storage=LazyTensorStorage(cfg.buffer_size), batch_size=cfg.batch_size)
    stateful = {
        "losses": loss,  # actor, twin critics, their targets and log α
        "actor_optimizer": actor_opt,
        "critic_optimizer": critic_opt,
        "alpha_optimizer": alpha_opt,
        "stackelberg": stackelberg,
        "replay_buffer": replay,
    }
    counters = {"frames": 0, "iterations": 0, "evaluations": 0, "updates": 0}
    if resumed is not None:
        counters = restore(stateful, resumed)
        print(f"resuming {run_dir} from {resumed_from.name} at {counters['frames']} frames", flush=True)

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    logger = make_logger(
        cfg.logger, run_dir, counters["frames"] if resumed else None, resumed.get("logger") if resumed else None
    )
    warmup = min(cfg.init_random_frames, cfg.total_frames // 10)  # a short run still trains
    iterations = math.ceil((cfg.total_frames - counters["frames"]) / cfg.frames_per_batch)
    one_env = {"num_envs": 1, "collector_workers": 1, "normalize_observations": False, "env_backend": "gymnasium"}
    collector_cfg = OmegaConf.create(
        {"env": cfg.env, "device": cfg.device, "frames_per_batch": cfg.frames_per_batch, **one_env}
    )
    collector = make_collector(collector_cfg, actor, iterations * cfg.frames_per_batch)
    collector.init_random_frames = max(0, warmup - counters["frames"])  # uniform actions until then
    timer = PhaseTimer()

    def checkpoint() -> Path:
        return write_checkpoint(run_dir, stateful, counters, cfg, logger)

    def evaluate_policy(seed: int) -> list[float]:
        return evaluate(actor, eval_env, cfg.eval_episodes, seed)

    tracker = RunTracker(cfg, counters, logger, timer, collector, evaluate_policy, checkpoint, f"{cfg.algo} {cfg.env}")
    tic = time.perf_counter()
    for batch in collector:  # collect frames_per_batch steps with the current policy
        timer.add("collect", time.perf_counter() - tic)
        counters["frames"] += batch.numel()
        counters["iterations"] += 1
        replay.extend(batch.reshape(-1))
        logged = defaultdict(list)
        if counters["frames"] >= warmup:
            with timer("update"):
                for _ in range(int(cfg.utd_ratio * batch.numel())):
                    minibatch = replay.sample()
                    if stackelberg is not None:  # leader: total derivative; follower and α: their own
                        diagnostics = stackelberg(minibatch)
                        prefix = "implicit/"
                    elif cfg.update_order == "critic_first":  # SB3's order: the actor sees the stepped critic
                        diagnostics = critic_first_step(loss, minibatch, critic_opt)
                        prefix = "sac/"
                    else:  # SAC: each player's own partial gradient
                        diagnostics = plain_gradients(loss, minibatch)
                        prefix = "sac/"
                    for optimizer in (actor_opt, critic_opt, alpha_opt):
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    loss.update_targets(cfg.tau)
                    counters["updates"] += 1
                    for key, value in diagnostics.items():
                        logged[prefix + key].append(float(value))
        metrics = {key: float(np.mean(values)) for key, values in logged.items()}
        metrics["alpha"] = float(loss.alpha)

        tracker.after_batch(batch, metrics)  # log, evaluate, checkpoint
        tic = time.perf_counter()

    collector.shutdown()
    eval_env.close()
    summary = {**tracker.finish(run_dir), "leader": cfg.leader, "updates": counters["updates"]}
    print(
        f"done: {cfg.algo} ({cfg.leader} leads) on {cfg.env}, seed {cfg.seed}: {summary['frames']} frames, "
        f"{summary['updates']} updates in {summary['wall_seconds']:.1f} s, eval return "
        f"{summary['eval_return_mean']:.1f}; logs and checkpoints in {run_dir}"
    )
    return summary


@hydra.main(config_path=".", config_name="config_stsac", version_base="1.3")
@recipe_cli.one_line_errors
def main(cfg: DictConfig) -> None:
    train(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    recipe_cli.run(main)
