"""The fast DP-SGD path: the same per-example clipping and the same mechanism as Opacus."""

import copy
import math
import warnings

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from privfed.federated import Client, LocalTraining, bind_flat_parameters
from privfed.models import build_model
from privfed.privacy import DPSGDParams, DPSGDTrainer, NoisePolicy
from privfed.privacy.fastclip import PerExampleClipper, fast_path_obstacles
from privfed.privacy.perexample import (
    clip_factors,
    conv2d_per_example_grads,
    linear_clipped_grads,
    linear_sq_norms,
)
from privfed.privacy.randomness import SeededNoise
from privfed.privacy.trainer import _WORKSPACES

SEEDED = NoisePolicy(secure=False, seed=0)
MODELS = {
    "mlp": lambda: build_model("mlp", (6,), 3, seed=0, hidden=(16, 8)),
    "logistic": lambda: build_model("logistic", (6,), 3, seed=0),
    "cnn": lambda: build_model("cnn", (1, 8, 8), 3, seed=0),
}


def _inputs(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inputs for model ``name`` whose scales (0.1 to 10) spread the gradient norms."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 8, 8) if name == "cnn" else (6,)
    scale = torch.logspace(-1, 1, n)[torch.randperm(n, generator=g)]
    x = torch.randn(n, *shape, generator=g) * scale.view(-1, *[1] * len(shape))
    return x, torch.randint(0, 3, (n,), generator=g)


def _opacus_per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Opacus's per-example gradients ``(B, num_params)`` (its ``grad_sample``, flattened in
    ``parameters()`` order) of the summed cross-entropy, on a copy of ``model``."""
    reference = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    with warnings.catch_warnings():  # the first layer's input needs no gradient: expected
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        nn.CrossEntropyLoss(reduction="sum")(reference(x), y).backward()
    return torch.cat([p.grad_sample.flatten(1) for p in reference.parameters()], dim=1)


# ---------------------------------------------------------------------- per-example math
@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_example_clipped_gradients_equal_opacus(name):
    """Each example's clipped gradient on the fast path (its norm, its factor, and the
    clipped sum restricted to it by one-hot factors) is Opacus's grad_sample clipped by
    Opacus's rule ``min(1, C / (norm + 1e-6))``, with some examples clipped and some not."""
    model = MODELS[name]()
    x, y = _inputs(name, 12)
    per_example = _opacus_per_example(model, x, y)
    norms = per_example.norm(dim=1)
    max_grad_norm = float(norms.median())
    expected = per_example * (max_grad_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)
    clipper = PerExampleClipper(model)
    with clipper.recording() as tape:
        loss = nn.CrossEntropyLoss(reduction="sum")(model(x), y)
        grads = tape.gradients(loss)
    torch.testing.assert_close(grads.sq_norms.sqrt(), norms, rtol=1e-5, atol=0)
    factors = clip_factors(grads.sq_norms.sqrt(), max_grad_norm)
    assert 0 < int((factors < 1).sum()) < len(x)  # some clipped, some not
    for i in range(len(x)):
        one = torch.zeros(len(x))
        one[i] = factors[i]
        clipped = torch.cat([s.flatten() for s in grads.sums(one)])
        torch.testing.assert_close(clipped, expected[i], rtol=1e-6, atol=1e-6)
        assert clipped.norm() <= max_grad_norm * (1 + 1e-6)
    total = torch.cat([s.flatten() for s in grads.sums(factors)])
    torch.testing.assert_close(total, expected.sum(0), rtol=1e-5, atol=1e-6)


def test_clip_factors_are_opacus_formula_bit_for_bit():
    norms = torch.cat([torch.zeros(1), torch.logspace(-8, 3, 200)])
    for max_grad_norm in (0.1, 1.0, 7.3):
        expected = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # get_clipping_coef
        assert torch.equal(clip_factors(norms, max_grad_norm), expected)


def test_linear_functions_take_leading_dimensions():
    """A leading dimension K stacks independent problems: each slice gives what it gives
    alone, with its own factors; mismatched shapes are errors."""
    g = torch.Generator().manual_seed(1)
    a, grad = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 2, generator=g)
    factors = torch.rand(3, 5, generator=g)
    weight, bias = linear_clipped_grads(a, grad, factors, bias=True)
    norms = linear_sq_norms(a, grad, bias=True)
    assert weight.shape == (3, 2, 4) and bias.shape == (3, 2) and norms.shape == (3, 5)
    for k in range(3):
        w_k, b_k = linear_clipped_grads(a[k], grad[k], factors[k], bias=True)
        torch.testing.assert_close(weight[k], w_k)
        torch.testing.assert_close(bias[k], b_k)
        per_example = torch.einsum("bo,bi->boi", grad[k], a[k])  # g_i a_iᵀ
        expected = per_example.flatten(1).square().sum(1) + grad[k].square().sum(1)
        torch.testing.assert_close(norms[k], expected)
        torch.testing.assert_close(w_k, torch.einsum("b,boi->oi", factors[k], per_example))
    assert linear_clipped_grads(a, grad, factors, bias=False)[1] is None
    torch.testing.assert_close(linear_sq_norms(a, grad, bias=False),
                               a.square().sum(-1) * grad.square().sum(-1))
    with pytest.raises(ValueError, match="factors have shape"):
        linear_clipped_grads(a, grad, factors[0], bias=True)
    with pytest.raises(ValueError, match=r"\(\*lead, B, in\)"):
        linear_sq_norms(a, grad[:, :4], bias=True)


@pytest.mark.parametrize("options", [
    dict(padding=2), dict(padding="same"), dict(padding="valid", stride=2),
    dict(padding=(1, 3), dilation=(2, 1), stride=(1, 2)), dict(padding=1, bias=False),
])
@pytest.mark.parametrize("kernel", [(5, 5), (4, 3)])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_conv2d_per_example_grads_equal_one_backward_per_example(options, kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel, **options)
    x = torch.randn(5, 3, 11, 13)
    out = conv(x)
    grad = torch.randn_like(out)
    weight, bias = conv2d_per_example_grads(x, grad, conv)
    for i in range(5):
        conv.zero_grad()
        out[i].backward(grad[i], retain_graph=True)
        torch.testing.assert_close(weight[i], conv.weight.grad.flatten(1), rtol=1e-5,
                                   atol=1e-5)
        if conv.bias is not None:
            torch.testing.assert_close(bias[i], conv.bias.grad, rtol=1e-5, atol=1e-5)
    assert (bias is None) == (conv.bias is None)
    empty, _ = conv2d_per_example_grads(x[:0], grad[:0], conv)
    assert empty.shape == (0, 4, 3 * kernel[0] * kernel[1])


def test_obstacles_name_each_layer_the_fast_path_cannot_clip():
    frozen = nn.Linear(4, 4)
    frozen.bias.requires_grad_(False)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.BatchNorm1d(4, affine=False),
                          frozen, nn.Conv2d(4, 4, 3, groups=2), shared, shared)
    found = fast_path_obstacles(model)
    assert any(f.startswith("1 (LayerNorm): no per-example rule") for f in found)
    assert any(f.startswith("2 (BatchNorm1d): BatchNorm mixes") for f in found)
    assert any(f.startswith("3 (Linear): only some") for f in found)
    assert any(f.startswith("4 (Conv2d): groups=2") for f in found)
    assert any(f.startswith("6 (Linear): shares a parameter with 5 (Linear)") for f in found)
    assert not any(f.startswith("0 ") for f in found)
    assert fast_path_obstacles(MODELS["cnn"]()) == []


# ---------------------------------------------------------------------- the trainer
def _fit(model_name: str | nn.Module, backend: str, client: Client, params: DPSGDParams,
         training: LocalTraining, seed: int = 3):
    """One round of DP-SGD on a fresh workspace of the model; returns (update, workspace)."""
    module = MODELS[model_name]() if isinstance(model_name, str) else copy.deepcopy(model_name)
    workspace = bind_flat_parameters(module)
    trainer = DPSGDTrainer(params, training, SEEDED, backend=backend)
    update = trainer.fit(client, workspace, workspace.data.clone(),
                         torch.Generator().manual_seed(seed))
    return update, workspace


def _batch_sizes(n: int, params: DPSGDParams, numel: int, seed: int) -> list[int]:
    """The Poisson batch sizes the trainer draws from seed ``seed`` (batch, then noise)."""
    source = SeededNoise(generator=torch.Generator().manual_seed(seed))
    sizes = []
    for _ in range(params.steps_per_round):
        sizes.append(len(source.subsample(n, params.sample_rate)))
        source.normal(params.noise_multiplier * params.max_grad_norm, numel)
    return sizes


@pytest.mark.parametrize(("name", "mu"), [("mlp", 0.0), ("mlp", 0.3), ("logistic", 0.0),
                                          ("cnn", 0.0), ("cnn", 0.1)])
def test_a_round_on_the_fast_path_equals_the_opacus_round(name, mu):
    """Seeded noise: the same batches (one of them empty), clipping, noise and FedProx term
    give the same delta. Tolerance: the two paths sum in other orders, so in float32 (eps
    = 2^-24, 6e-8) each coordinate of a step, lr / B (clipped sum + noise), differs by a few
    eps of |clipped sum| + |noise| <= n C + 5 sigma C; over the steps these add up:
    atol = 4 eps x steps x lr / B x (n C + 5 sigma C), 3.9e-6 here (measured: <= 1.2e-7)."""
    x, y = _inputs(name, 8, seed=1)
    params = DPSGDParams(1.0, 1.0, 0.2, 10, 4.0)
    training = LocalTraining(1, 4, 0.5, mu=mu)
    client = Client(0, x, y)
    fast, workspace = _fit(name, "fast", client, params, training)
    reference, _ = _fit(name, "opacus", client, params, training)
    sizes = _batch_sizes(8, params, workspace.spec.numel, seed=3)
    assert 0 in sizes and max(sizes) > 1  # an empty batch and a real one
    atol = 4 * 2**-24 * params.steps_per_round * training.lr / params.normaliser * (8 + 5)
    torch.testing.assert_close(fast.delta, reference.delta, rtol=0, atol=atol)
    assert fast.delta.abs().max() > 100 * atol  # the round did move the model
    assert fast.train_loss == pytest.approx(reference.train_loss, rel=1e-5)
    assert fast.steps == reference.steps == 10
    # The flat gradient views survive: zero, and what each parameter's .grad views.
    assert not workspace.grad.any()
    storage = workspace.grad.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == storage
               for p in workspace.module.parameters())


def test_every_batch_empty_still_adds_the_noise_on_the_fast_path():
    x, y = _inputs("mlp", 2)
    params = DPSGDParams(1.0, 1.0, 1e-9, 3, 8.0)
    training = LocalTraining(1, 8, 0.1)
    fast, _ = _fit("mlp", "fast", Client(0, x, y), params, training)
    reference, _ = _fit("mlp", "opacus", Client(0, x, y), params, training)
    assert math.isnan(fast.train_loss) and math.isnan(reference.train_loss)
    assert fast.delta.abs().sum() > 0
    torch.testing.assert_close(fast.delta, reference.delta, rtol=0, atol=1e-7)


def test_one_record_moves_the_released_update_by_at_most_its_clipped_step():
    """The adversary's view with sigma = 0. One step: adding a record with a huge gradient
    to 10 records moves the update by exactly lr C / B (clipped to C, not more). A round of
    5 steps on that record alone (its neighbour, no records, has only empty batches and
    does not move: here shown by a rate at which no batch holds it) moves by at most
    5 lr C / B."""
    x, y = _inputs("mlp", 10)
    huge = (torch.full((1, 6), 1e4), torch.tensor([2]))
    training = LocalTraining(1, 8, 0.5)
    one_step = DPSGDParams(0.0, 0.5, 1.0, 1, 8.0)  # q = 1: every record in the batch
    bound = training.lr * 0.5 / 8.0
    without, _ = _fit("mlp", "fast", Client(0, x, y), one_step, training)
    grown = Client(0, torch.cat([x, huge[0]]), torch.cat([y, huge[1]]))
    with_record, _ = _fit("mlp", "fast", grown, one_step, training)
    moved = float((with_record.delta - without.delta).norm())
    assert bound * (1 - 1e-4) <= moved <= bound * (1 + 1e-5)
    alone = Client(0, *huge)
    never, _ = _fit("mlp", "fast", alone, DPSGDParams(0.0, 0.5, 1e-9, 5, 8.0), training)
    assert not never.delta.any()
    update, _ = _fit("mlp", "fast", alone, DPSGDParams(0.0, 0.5, 1.0, 5, 8.0), training)
    assert bound <= float(update.delta.norm()) <= 5 * bound * (1 + 1e-5)


# ---------------------------------------------------------------------- fallback and errors
class _Sequence(nn.Module):
    """A Linear layer applied to a (B, 2, 3) sequence: per example, not per row."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.head = nn.Linear(3, 4), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.inner(x.view(-1, 2, 3))).flatten(1))


@pytest.mark.parametrize(("model", "named"), [
    (nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 3)),
     r"1 \(GroupNorm\)"),
    (nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3)),
     r"1 \(LayerNorm\)"),
    (_Sequence(), r"inner \(Linear\) got an input of shape \(1, 2, 3\)"),
])
def test_a_model_the_fast_path_cannot_clip_trains_through_opacus(model, named):
    torch.manual_seed(0)
    model = copy.deepcopy(model)
    x, y = _inputs("mlp", 12)
    params, training = DPSGDParams(1.0, 1.0, 0.5, 3, 4.0), LocalTraining(1, 4, 0.5)
    auto, workspace = _fit(model, "auto", Client(0, x, y), params, training)
    reference, _ = _fit(model, "opacus", Client(0, x, y), params, training)
    assert workspace.module in _WORKSPACES  # Opacus's hooks did the clipping
    assert torch.equal(auto.delta, reference.delta)
    with pytest.raises(ValueError, match=named):
        _fit(model, "fast", Client(0, x, y), params, training)


def test_a_bad_backend_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"\['auto', 'fast', 'opacus'\], got 'ghost'"):
        DPSGDTrainer(DPSGDParams(1.0, 1.0, 0.5, 1, 4.0), LocalTraining(1, 4, 0.5), SEEDED,
                     backend="ghost")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fast_path_trains_on_cuda_as_on_the_cpu():
    x, y = _inputs("cnn", 8, seed=1)
    params, training = DPSGDParams(1.0, 1.0, 0.5, 4, 4.0), LocalTraining(1, 4, 0.5, mu=0.1)
    cpu, _ = _fit("cnn", "fast", Client(0, x, y), params, training)
    workspace = bind_flat_parameters(MODELS["cnn"](), device="cuda")
    trainer = DPSGDTrainer(params, training, SEEDED, backend="fast")
    cuda = trainer.fit(Client(0, x, y), workspace, workspace.data.cpu(),
                       torch.Generator().manual_seed(3))
    assert cuda.delta.device.type == "cpu"
    torch.testing.assert_close(cuda.delta, cpu.delta, rtol=0, atol=1e-4)
