"""The linear-probe regime: a real (tiny, BatchNorm) CNN, trained for a few epochs; no mocks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fennec_mlflow.data import zoo
from fennec_mlflow.training.finetune import (
    REGIMES,
    FinetuneConfig,
    FinetuneError,
    finetune,
)
from tests.training.test_finetune import colour_task, tiny_config


def bn_cnn(seed: int = 0) -> zoo.ZooModel:
    """Conv + BatchNorm + dropout backbone and a Linear head: every part a probe must leave alone."""
    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(128, 10),
    )
    return zoo.from_module(module, "bn-cnn", input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)


HEAD = "6"  # the Linear's key in the Sequential


@pytest.fixture(scope="module")
def task():
    return colour_task(per_class=20)


def backbone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if not k.startswith(f"{HEAD}.")}


def test_linear_probe_trains_only_the_head(task):
    model = bn_cnn()
    before = backbone_state(model.module)
    result = finetune(model, task, tiny_config(regime="linear-probe", learning_rates=(0.05,)))
    after = backbone_state(result.module)
    assert before.keys() == after.keys() and "1.running_mean" in after  # BatchNorm buffers included
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"the probe moved backbone weights or BatchNorm statistics: {changed}"
    head = result.module.get_submodule(HEAD)
    assert head.out_features == 4 and result.best.best_epoch >= 1
    assert result.test_accuracy > 0.4  # 4 hues on fixed random-conv features: well above chance (0.25)
    assert backbone_state(model.module).keys() == before.keys()  # the caller's model untouched
    assert all(torch.equal(v, before[k]) for k, v in backbone_state(model.module).items())


def test_full_regime_moves_the_backbone_and_its_batchnorm_statistics(task):
    model = bn_cnn()
    before = backbone_state(model.module)
    result = finetune(model, task, tiny_config(regime="full", learning_rates=(0.05,)))
    after = backbone_state(result.module)
    assert not torch.equal(before["0.weight"], after["0.weight"])
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])


def test_probe_and_full_differ_and_full_is_the_default(task):
    default = finetune(bn_cnn(), task, tiny_config(learning_rates=(0.05,)))
    full = finetune(bn_cnn(), task, tiny_config(learning_rates=(0.05,), regime="full"))
    probe = finetune(bn_cnn(), task, tiny_config(learning_rates=(0.05,), regime="linear-probe"))
    assert FinetuneConfig().regime == "full" and REGIMES == ("full", "linear-probe")
    assert [h["train_loss"] for h in default.best.history] == [h["train_loss"] for h in full.best.history]
    assert [h["train_loss"] for h in probe.best.history] != [h["train_loss"] for h in full.best.history]


def test_unknown_regime_is_rejected():
    with pytest.raises(FinetuneError, match="regime must be one of"):
        FinetuneConfig(regime="partial")
