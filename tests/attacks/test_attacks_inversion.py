"""Gradient inversion: exact on one plain update, useless on aggregates and DP updates."""

import numpy as np
import pytest

from attacks.inversion import gradient_from_update, recover_label
from attacks.inversion_experiment import inversion_experiment
from privfed.config import load_config
from privfed.data import load_dataset

BASE = ["data.scaling=unit"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", scaling="unit")


def _run(digits, overrides, n, **kwargs):
    return inversion_experiment(load_config(overrides=BASE + overrides), digits.x_train[:n],
                                digits.y_train[:n], num_classes=10, **kwargs)


@pytest.fixture(scope="module")
def single(digits):
    return _run(digits, [], 2)


def test_single_update_is_inverted(single):
    summary = single.summary()
    assert summary["view"] == "server"
    assert summary["label_accuracy"] == 1.0
    assert min(single.per_example["psnr"]) >= 25.0
    assert min(single.per_example["ssim"]) >= 0.9


def test_gradient_from_update_and_label():
    update = np.array([0.2, -0.4])
    np.testing.assert_allclose(gradient_from_update(update, lr=0.1).numpy(), [-2.0, 4.0])
    np.testing.assert_allclose(gradient_from_update(update, lr=0.1, steps=2).numpy(),
                               [-1.0, 2.0])


def test_idlg_label_from_bias_gradient():
    from privfed.federated import bind_flat_parameters
    from privfed.models import build_model

    ws = bind_flat_parameters(build_model("logistic", (4,), 3, seed=0))
    grad = np.zeros(ws.spec.numel, dtype=np.float32)
    grad[-3:] = [0.3, -0.5, 0.2]  # softmax - onehot(1)
    assert recover_label(ws, gradient_from_update(-0.1 * grad, lr=0.1)) == 1


def test_multi_step_update_is_inverted_approximately(digits, single):
    multi = _run(digits, [], 2, scenario="multi_step", steps=3, iterations=5)
    assert multi.summary()["label_accuracy"] == 1.0
    assert min(single.per_example["psnr"]) > max(multi.per_example["psnr"])


def test_aggregate_of_ten_clients_is_not_inverted(digits, single):
    aggregate = _run(digits, [], 10, scenario="aggregate", iterations=4)
    assert aggregate.per_example["psnr"][0] < 20.0
    assert aggregate.per_example["psnr"][0] < min(single.per_example["psnr"]) - 10


def test_dp_noised_update_is_not_inverted(digits, single):
    noised = _run(digits, ["privacy.mechanism=local", "privacy.noise_multiplier=1.0"], 2,
                  iterations=4)
    assert max(noised.per_example["psnr"]) < 20.0
    assert max(noised.per_example["psnr"]) < min(single.per_example["psnr"]) - 10


def test_he_update_is_opaque_to_the_server_but_not_to_collusion(digits):
    he = _run(digits, ["secure.kind=he", "model.hidden=[32]"], 1)
    assert he.view == "collusion"
    assert he.per_example["psnr"][0] >= 25.0


def test_masked_update_is_reported_not_attacked(digits):
    masked = _run(digits, ["secure.kind=masking", "model.hidden=[32]"], 3)
    assert masked.summary()["status"] == "not applicable"
    assert "opaque" in masked.summary()["reason"]
