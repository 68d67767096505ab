"""``federation.device``: its forms, its resolution on this machine, and that training on
"auto" (here the CPU) and on CUDA gives the CPU's results."""

import pytest
import torch

from privfed.config import ConfigError, load_config
from privfed.config.federation import FederationConfig
from privfed.experiment import build_simulation
from privfed.federated.device import available_devices, resolve_device

DIGITS = ("federation.rounds=3", "model.hidden=[16]", "federation.eval_every=1")


def _run(*overrides):
    simulation = build_simulation(load_config(overrides=[*DIGITS, *overrides]))
    history = simulation.run()
    return simulation.server.weights, [r.test_accuracy for r in history.rounds], history


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="auto means the CPU only on a machine without CUDA or MPS")
@pytest.mark.parametrize("privacy", [(), ("privacy.mechanism='local'",
                                          "privacy.noise_multiplier=0.8",
                                          "privacy.delta=1e-3")])
def test_auto_on_a_cpu_machine_is_bit_identical_to_cpu(privacy):
    assert resolve_device("auto") == torch.device("cpu")
    weights_cpu, accuracies_cpu, _ = _run("federation.device='cpu'", *privacy)
    weights_auto, accuracies_auto, _ = _run("federation.device='auto'", *privacy)
    assert weights_cpu.device.type == "cpu" and torch.equal(weights_auto, weights_cpu)
    assert accuracies_auto == accuracies_cpu and None not in accuracies_cpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_named_config_error(name):
    with pytest.raises(ConfigError, match=rf"federation.device = '{name}' but CUDA is not "
                                          r"available.*allowed here: auto, cpu"):
        build_simulation(load_config(overrides=[*DIGITS, f"federation.device='{name}'"]))


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:", "CPU", "cuda:-1", ""])
def test_a_bad_device_form_is_rejected_at_config_time(name):
    with pytest.raises(ConfigError, match=r"federation.device.*allowed: auto, cpu, cuda, "
                                          r"cuda:N, mps"):
        FederationConfig(device=name)
    with pytest.raises(ConfigError, match="federation.device"):
        load_config(overrides=[f"federation.device='{name}'"])


def test_the_device_does_not_change_the_run_directory():
    auto, cpu = (load_config(overrides=[f"federation.device='{d}'"]) for d in ("auto", "cpu"))
    assert auto.short_hash() == cpu.short_hash()


def test_available_devices_always_include_auto_and_cpu():
    assert available_devices()[:2] == ["auto", "cpu"]
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("privacy", [(), ("privacy.mechanism='local'",
                                          "privacy.noise_multiplier=0.8",
                                          "privacy.delta=1e-3")])
def test_cuda_training_matches_the_cpu_within_float_tolerance(privacy):
    common = ("federation.rounds=2", *privacy)
    weights_cpu, accuracies_cpu, _ = _run("federation.device='cpu'", *common)
    weights_gpu, accuracies_gpu, history = _run("federation.device='cuda'", *common)
    assert weights_gpu.device.type == "cpu" and weights_gpu.dtype == torch.float32
    torch.testing.assert_close(weights_gpu, weights_cpu, rtol=1e-4, atol=1e-4)
    assert accuracies_gpu == pytest.approx(accuracies_cpu, abs=0.02)
    assert len(history.rounds) == 2
