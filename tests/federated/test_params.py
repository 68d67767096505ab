import pytest
import torch
import torch.nn.functional as F

from privfed.federated import ParamSpec, bind_flat_parameters
from privfed.models import build_model


def test_flatten_unflatten_round_trip():
    model = build_model("mlp", (6,), 3, seed=0, hidden=(5,))
    spec = ParamSpec.from_module(model)
    state = dict(model.named_parameters())
    flat = spec.flatten(state)
    assert flat.shape == (spec.numel,) == (6 * 5 + 5 + 5 * 3 + 3,)
    for name, tensor in spec.unflatten(flat).items():
        assert torch.equal(tensor, state[name])


def test_unflatten_rejects_wrong_length():
    spec = ParamSpec.from_module(build_model("logistic", (4,), 2, seed=0))
    with pytest.raises(ValueError, match=r"expected \(10,\)"):
        spec.unflatten(torch.zeros(11))


def test_flatten_rejects_wrong_shape_and_missing_name():
    spec = ParamSpec.from_module(build_model("logistic", (4,), 2, seed=0))
    with pytest.raises(ValueError, match="missing"):
        spec.flatten({})
    with pytest.raises(ValueError, match="shape"):
        spec.flatten({"1.weight": torch.zeros(3, 4), "1.bias": torch.zeros(2)})


def test_bound_parameters_keep_values_and_gradients_land_in_flat_buffer(blobs):
    x, y = blobs
    reference = build_model("mlp", (6,), 3, seed=1, hidden=(8,))
    bound = bind_flat_parameters(build_model("mlp", (6,), 3, seed=1, hidden=(8,)))
    assert torch.equal(bound.data, ParamSpec.from_module(reference).flatten(
        dict(reference.named_parameters())))

    F.cross_entropy(reference(x), y).backward()
    bound.grad.zero_()
    F.cross_entropy(bound.module(x), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(bound.grad, expected, rtol=0, atol=1e-7)

    # Writing the flat buffer changes the module.
    bound.load(torch.zeros_like(bound.data))
    assert all(torch.count_nonzero(p) == 0 for p in bound.module.parameters())
