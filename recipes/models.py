"""The actor and critic networks of the STAC recipes (the paper's tanh MLPs)."""

from __future__ import annotations

from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import Categorical, OneHot
from torchrl.envs import EnvBase
from torchrl.modules import MLP, OneHotCategorical, ProbabilisticActor, TanhNormal, ValueOperator

from schema import ConfigError


def make_models(env: EnvBase, cells: list[int], device: str) -> tuple[ProbabilisticActor, ValueOperator]:
    """Tanh MLP actor (TanhNormal, or OneHotCategorical for discrete actions) and V critic."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec_unbatched
    if isinstance(action_spec, Categorical):
        raise ConfigError("use one-hot action encoding (GymEnv's default) for discrete actions.")
    act_dim = action_spec.shape[-1]
    if isinstance(action_spec, OneHot):
        net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=list(cells), activation_class=nn.Tanh)
        module = TensorDictModule(net, ["observation"], ["logits"])
        actor = ProbabilisticActor(
            module, in_keys=["logits"], spec=action_spec, distribution_class=OneHotCategorical, return_log_prob=True
        )
    else:
        net = nn.Sequential(
            MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=list(cells), activation_class=nn.Tanh),
            NormalParamExtractor(),
        )
        module = TensorDictModule(net, ["observation"], ["loc", "scale"])
        actor = ProbabilisticActor(
            module,
            in_keys=["loc", "scale"],
            spec=action_spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high},
            return_log_prob=True,
        )
    critic = ValueOperator(
        MLP(in_features=obs_dim, out_features=1, num_cells=list(cells), activation_class=nn.Tanh),
        in_keys=["observation"],
    )
    return actor.to(device), critic.to(device)
