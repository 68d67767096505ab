"""A user's own model: by import path in the config (CLI), or as an nn.Module (Python API);
and the DP-SGD check of its layers (BatchNorm: a named error, or Opacus's fix on opt-in)."""

import functools
import json
import sys

import pytest
import torch
from torch import nn

from privfed.cli import main
from privfed.clientdata import load_configured_dataset
from privfed.config import ConfigError, load_config
from privfed.config.model import ModelConfig
from privfed.experiment import build_parts, build_simulation
from privfed.models import build_model
from privfed.rundir import train_in_process, train_run

MODULE = "privfed_test_user_models"
SOURCE = '''
from torch import nn


def make(input_shape, num_classes, width=16):
    n = 1
    for dim in input_shape:
        n *= dim
    hidden = nn.Linear(n, width)
    return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(width, num_classes))


def batchnorm_cnn(input_shape, num_classes):
    channels, height, width = input_shape
    features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    return nn.Sequential(features, nn.Flatten(), nn.Linear(4 * height * width, num_classes))


NOT_CALLABLE = 3


def not_a_module(input_shape, num_classes):
    return "a string"


def broken(input_shape, num_classes):
    raise RuntimeError("boom")
'''

DIGITS = '''
name = "digits-user"
seed = 0

[data]
dataset = "digits"
num_clients = 5
partition = "iid"

[model]
name = "{name}"

[model.options]
width = 16

[federation]
rounds = 3
batch_size = 16
lr = 0.1
'''
CHANCE = 0.1


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``privfed_test_user_models`` importable from ``tmp_path``."""
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return MODULE


def _config(tmp_path, name, *overrides):
    path = tmp_path / "digits-user.toml"
    path.write_text(DIGITS.format(name=name))
    return path, load_config(path, overrides)


def test_a_model_by_import_path_trains_through_the_cli(tmp_path, user_module, capsys):
    path, config = _config(tmp_path, f"{user_module}:make")
    out = tmp_path / "runs"
    assert main(["run", str(path), "--output-dir", str(out), "--quiet"]) == 0
    (run_dir,) = out.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["final_accuracy"] > 3 * CHANCE
    trained = torch.load(run_dir / "model.pt")["state_dict"]
    initial = build_model(config.model.name, (1, 8, 8), 10, seed=0, width=16).state_dict()
    assert [tuple(t.shape) for t in trained.values()] == [(16, 64), (16,), (10, 16), (10,)]
    assert all(not torch.equal(trained[k], initial[k]) for k in initial)
    assert load_config(run_dir / "config.toml").model == config.model  # options read back


def test_a_module_instance_trains_through_the_python_api(tmp_path, user_module):
    _, config = _config(tmp_path, "mlp", "model.options={}")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    simulation = build_simulation(config, model=net)
    initial = simulation.server.weights.clone()
    history = simulation.run()
    assert history.rounds[-1].test_accuracy > 3 * CHANCE
    assert simulation.server.workspace.spec.names == ("1.weight", "1.bias", "3.weight", "3.bias")
    assert not torch.equal(simulation.server.weights, initial)
    # The caller's module is copied, never trained in place.
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_train_run_writes_the_run_directory_of_a_module_instance(tmp_path):
    _, config = _config(tmp_path, "mlp", "model.options={}", "federation.rounds=2")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = train_run(config, tmp_path / "run", train=functools.partial(train_in_process,
                                                                         model=net))
    assert list(torch.load(result.run_dir / "model.pt")["state_dict"]) == ["1.weight", "1.bias"]
    assert result.summary["final_accuracy"] > 3 * CHANCE


def test_a_user_factory_is_seeded_like_the_built_in_models(user_module):
    first, second, other = (build_model(f"{user_module}:make", (4,), 3, seed=s) for s in (1, 1, 2))
    assert torch.equal(first[1].weight, second[1].weight)
    assert not torch.equal(first[1].weight, other[1].weight)


DP = ("privacy.mechanism='local'", "privacy.noise_multiplier=0.5", "privacy.delta=1e-3",
      "federation.rounds=2")


def test_batchnorm_under_dp_sgd_is_a_named_config_error(tmp_path, user_module):
    _, config = _config(tmp_path, f"{user_module}:batchnorm_cnn", "model.options={}", *DP)
    with pytest.raises(ConfigError) as info:
        build_parts(config, load_configured_dataset(config))
    message = str(info.value)
    assert "0.1 (BatchNorm2d)" in message and "ModuleValidator.fix" in message
    assert "model.fix_for_dp = true" in message and "GroupNorm" in message


def test_fix_for_dp_replaces_batchnorm_and_trains(tmp_path, user_module):
    _, config = _config(tmp_path, f"{user_module}:batchnorm_cnn", "model.options={}",
                        "model.fix_for_dp=true", *DP)
    simulation = build_simulation(config)
    initial = simulation.server.weights.clone()
    history = simulation.run()
    layers = [type(m) for m in simulation.server.workspace.module.modules()]
    assert nn.GroupNorm in layers
    assert not any(issubclass(t, nn.modules.batchnorm._BatchNorm) for t in layers)
    assert len(history.rounds) == 2 and not torch.equal(simulation.server.weights, initial)


def test_without_dp_sgd_batchnorm_is_left_alone(tmp_path, user_module):
    _, config = _config(tmp_path, f"{user_module}:batchnorm_cnn", "model.options={}")
    parts = build_parts(config, load_configured_dataset(config))
    assert any(isinstance(m, nn.BatchNorm2d) for m in parts.workspace.module.modules())


@pytest.mark.parametrize(("attr", "message"), [
    ("missing", "has no attribute 'missing'"),
    ("NOT_CALLABLE", "not callable"),
    ("not_a_module", "not a torch.nn.Module"),
    ("broken", "the factory raised RuntimeError: boom"),
])
def test_bad_factories_are_named_errors(tmp_path, user_module, attr, message):
    _, config = _config(tmp_path, f"{user_module}:{attr}", "model.options={}")
    with pytest.raises(ConfigError, match=message) as info:
        build_parts(config, load_configured_dataset(config))
    assert f"model.name = '{user_module}:{attr}'" in str(info.value)


def test_a_missing_module_is_a_named_error(tmp_path):
    _, config = _config(tmp_path, "privfed_no_such_module_here:make")
    with pytest.raises(ConfigError, match="cannot import module 'privfed_no_such_module_here'"):
        build_parts(config, load_configured_dataset(config))


@pytest.mark.parametrize("name", ["pkg.mod:", ":make", "pkg mod:make", "pkg:make:again",
                                  "pkg.:make", "1pkg:make"])
def test_a_bad_import_path_form_is_rejected_at_config_time(name):
    with pytest.raises(ConfigError, match="model.name.*'package.module:factory'"):
        ModelConfig(name=name)


def test_options_are_only_for_a_user_factory():
    with pytest.raises(ConfigError, match="model.options"):
        ModelConfig(name="mlp", options={"width": 3})
    assert ModelConfig(name="pkg.mod:make", options={"width": 3}).build_options() == {"width": 3}
    assert ModelConfig(name="mlp", hidden=[4]).build_options() == {"hidden": (4,)}
