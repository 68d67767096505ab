"""DP diagnostics: the exact figures equal what they count, the private ones are functions of
what is released, and the default history holds no exact figure."""

import copy
import math

import pytest
import torch
from torch import nn

from privfed.config.privacy import PrivacyConfig
from privfed.federated import Client, LocalTraining, bind_flat_parameters
from privfed.federated.stages import Pipeline, ServerAggregate
from privfed.models import build_model
from privfed.privacy import (
    AdaptiveClipping,
    CentralNoiseStage,
    ClipStage,
    DistributedNoiseStage,
    DPSGDParams,
    DPSGDTrainer,
)
from privfed.privacy.diagnostics import EXACT_KEYS, noise_figures
from tests.privacy._helpers import SEEDED, private_server

S, Z = 1.0, 0.5


def _updates(norms: list[float], d: int, seed: int = 0) -> list[torch.Tensor]:
    """Random float32 directions of length ``d`` with the given L2 norms."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for norm in norms:
        v = torch.randn(d, generator=g)
        out.append(v * (norm / torch.linalg.vector_norm(v)))
    return out


def _clipped_sum(updates: list[torch.Tensor], clip: float) -> torch.Tensor:
    """The sum of the updates clipped to ``clip``, computed here in float64."""
    return sum(v.double() * min(1.0, clip / float(torch.linalg.vector_norm(v.double())))
               for v in updates)


def _run(pipeline: Pipeline, updates: list[torch.Tensor], round_id: int = 1) -> ServerAggregate:
    """The client halves, the sum (weights 1) and the server halves of one round."""
    vectors = [pipeline.client(round_id, c, v) for c, v in enumerate(updates)]
    total = torch.stack(vectors).sum(0)
    return pipeline.server(round_id, ServerAggregate(total, 1.0, tuple(range(len(updates)))))


def _central(exact: bool, adaptive: AdaptiveClipping | None = None, z: float = Z,
             expected: float = 4.0) -> Pipeline:
    clip = ClipStage(S, expected, adaptive, exact_diagnostics=exact)
    return Pipeline([clip, CentralNoiseStage(clip, z, SEEDED, exact_diagnostics=exact)])


def test_exact_central_diagnostics_count_the_clipped_updates_and_the_noise_added():
    """Norms 0.5, 2, 3, 0.9 against S = 1: two of four clipped. SNR: the clipped sum
    computed here (float64) over the noise read back as released minus that sum; float32
    sums of 4 vectors and of the noise are exact to ~1e-7 relative, so rel 1e-5."""
    d = 1000
    updates = _updates([0.5, 2.0, 3.0, 0.9], d)
    pipeline = _central(exact=True)
    released = _run(pipeline, updates)
    figures = pipeline.metrics()
    assert figures["clipped_fraction"] == 2 / 4
    clean = _clipped_sum(updates, S)
    noise = released.sum.double() - clean
    signal_norm, noise_norm = float(clean.norm()), float(noise.norm())
    assert figures["signal_norm"] == pytest.approx(signal_norm, rel=1e-6)
    assert figures["noise_norm"] == pytest.approx(noise_norm, rel=1e-5)
    assert figures["snr"] == pytest.approx(signal_norm / noise_norm, rel=1e-5)
    assert figures["noise_std"] == Z * S
    assert figures["noise_norm_expected"] == pytest.approx(math.sqrt(d) * Z * S, rel=1e-12)
    # The noise drawn has the announced std: ||N||^2 / (d sigma^2) ~ 1 +- sqrt(2/d) (5 sd).
    assert abs(noise_norm**2 / (d * (Z * S) ** 2) - 1) < 5 * math.sqrt(2 / d)


def test_a_server_that_ran_no_client_half_reports_no_clipped_fraction():
    """A Flower server runs only the server halves: it counted nothing, so it says nothing
    (never a fraction of 0 clipped)."""
    pipeline = _central(exact=True)
    pipeline.server(1, ServerAggregate(torch.ones(10), 1.0, (0, 1)))
    assert "clipped_fraction" not in pipeline.metrics()
    assert "snr" in pipeline.metrics()  # the server's own figures stay


def test_the_default_central_history_holds_only_private_figures():
    pipeline = _central(exact=False)
    _run(pipeline, _updates([0.5, 2.0, 3.0, 0.9], 100))
    figures = pipeline.metrics()
    assert {"noise_std", "noise_norm_expected", "snr_estimate"} <= set(figures)
    assert not set(EXACT_KEYS) & set(figures)


def test_adaptive_clipping_reports_the_clipped_fraction_its_new_clip_norm_reveals():
    """The estimate is ``1/2 - noisy bit sum / qK``; since ``S' = S exp(-eta (1 - est -
    gamma))`` anyone holding the broadcast S' computes it, so it costs nothing. Without noise
    and with qK the cohort, it is the exact fraction."""
    adaptive = AdaptiveClipping(target_quantile=0.5, clip_lr=0.2, count_stddev=2.0)
    updates = _updates([0.5, 2.0, 3.0, 0.9, 1.5], 50)
    pipeline = _central(exact=True, adaptive=adaptive, z=1.0, expected=5.0)
    _run(pipeline, updates)
    figures = pipeline.metrics()
    read_back = 1 - 0.5 + math.log(figures["clip_norm"] / S) / 0.2
    assert figures["clipped_fraction_estimate"] == pytest.approx(read_back, abs=1e-9)
    # The clip bit (bit sum 2 x 1/2 - 3 x 1/2 = -1/2 here) is not signal.
    assert figures["signal_norm"] == pytest.approx(float(_clipped_sum(updates, S).norm()),
                                                   rel=1e-6)
    noiseless = _central(exact=True, adaptive=adaptive, z=0.0, expected=5.0)
    _run(noiseless, updates)
    figures = noiseless.metrics()
    assert figures["clipped_fraction_estimate"] == figures["clipped_fraction"] == 3 / 5


def test_the_snr_estimate_from_the_released_sum_is_within_its_standard_error():
    """``||Y||^2 - d sigma^2`` estimates ``||X||^2`` with sd ``sqrt(2 d sigma^4 + 4 ||X||^2
    sigma^2)`` (245 here, against ||X||^2 = 1e4); 5 sd."""
    d, sigma = 10_000, 1.0
    g = torch.Generator().manual_seed(3)
    signal = _updates([100.0], d, seed=4)[0]
    noisy = signal + sigma * torch.randn(d, generator=g)
    figures = noise_figures(noisy, sigma)
    estimate_sq = (figures["snr_estimate"] * figures["noise_norm_expected"]) ** 2
    sd = math.sqrt(2 * d * sigma**4 + 4 * 100.0**2 * sigma**2)
    assert abs(estimate_sq - 100.0**2) < 5 * sd
    assert figures["noise_norm_expected"] == math.sqrt(d) * sigma


def test_distributed_noise_figures_use_the_released_count_and_no_exact_noise():
    """5 shares of variance (z S)^2 / K_min, K_min = 3: the sum's std is z S sqrt(5/3);
    the noise read back (released minus the clipped sum) has it, within 5 sd of the sample
    variance (sqrt(2/d)). No party knows the total noise: no exact noise figure."""
    d = 20_000
    clip = ClipStage(S, 5.0, exact_diagnostics=True)
    pipeline = Pipeline([clip, DistributedNoiseStage(clip, Z, 3, SEEDED)])
    updates = _updates([0.5, 2.0, 3.0, 0.9, 1.5], d)
    released = _run(pipeline, updates)
    figures = pipeline.metrics()
    std = Z * S * math.sqrt(5 / 3)
    assert figures["noise_std"] == pytest.approx(std, rel=1e-12)
    noise = released.sum.double() - _clipped_sum(updates, S)
    assert abs(float(noise.var()) / std**2 - 1) < 5 * math.sqrt(2 / d)
    assert figures["clipped_fraction"] == 3 / 5
    assert not {"signal_norm", "noise_norm", "snr"} & set(figures)


# ---------------------------------------------------------------------- DP-SGD
def _per_example_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each example's gradient norm of the cross-entropy, one backward pass per example."""
    norms = []
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        norms.append(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())))
    return torch.stack(norms).detach()


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale = torch.logspace(-1, 1, n).view(-1, 1)  # spreads the gradient norms
    return torch.randn(n, 6, generator=g) * scale, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("backend", ["fast", "opacus"])
def test_dpsgd_counts_the_examples_whose_gradient_norm_exceeds_the_clip(backend):
    """Rate 1 and one step: every example in the batch, at the initial model; the clip
    between the 4th and 5th largest of the norms computed here clips exactly 4. Counted
    only when asked (the default hot path does no extra work)."""
    x, y = _data()
    model = build_model("mlp", (6,), 3, seed=0, hidden=(8,))
    norms = _per_example_norms(copy.deepcopy(model), x, y).sort().values
    clip = float(norms[-5] + norms[-4]) / 2
    params = DPSGDParams(1.0, clip, 1.0, 1, 4.0)
    workspace = bind_flat_parameters(model)
    for count in (True, False):
        trainer = DPSGDTrainer(params, LocalTraining(1, 4, 0.1), SEEDED, backend=backend,
                               count_clipped=count)
        update = trainer.fit(Client(0, x, y), workspace, workspace.data.clone(),
                             torch.Generator().manual_seed(1))
        counts = (update.examples_seen, update.examples_clipped)
        assert counts == ((12, 4) if count else (None, None))


@pytest.mark.parametrize("diagnostics", ["exact", "private"])
def test_the_round_reports_the_clipped_example_fraction_only_when_exact(diagnostics):
    """Two clients, rate 1, one step each from the same global model (the batched path):
    the round's fraction is the count of all their examples' norms above C over 24."""
    x, y = _data(24)
    model = build_model("mlp", (6,), 3, seed=0, hidden=(8,))
    norms = _per_example_norms(model, x, y)
    clip = float(norms.median())
    privacy = PrivacyConfig(mechanism="local", noise_multiplier=0.0, max_grad_norm=clip,
                            sample_rate=1.0, diagnostics=diagnostics)
    server = private_server([(x[:12], y[:12]), (x[12:], y[12:])], (x, y), privacy, rounds=1,
                            training=LocalTraining(1, 4, 0.1))
    record = server.run_round()
    if diagnostics == "exact":
        assert record.extra["clipped_example_fraction"] == float((norms > clip).sum()) / 24
    else:
        assert not set(EXACT_KEYS) & set(record.extra)


def test_exact_diagnostics_are_part_of_the_run_identity_the_default_is_not():
    """A cached private run is never shown for an exact request; the default keeps the
    identities of runs from before the field."""
    from privfed.config import load_config

    assert load_config().short_hash() == "e22b83ea"
    assert load_config(overrides=["privacy.diagnostics=exact"]).short_hash() != "e22b83ea"


def test_the_diagnostics_plot_draws_each_figure_of_the_history(tmp_path, figures):
    """Per-client epsilon as its min and max; a round without a figure (or with an infinite
    one) is left out of that line; a line repeating another (the outsider's epsilon where it
    is the headline, the max over clients, which is the headline) is drawn once."""
    from privfed.federated import History, RoundRecord
    from privfed.plots import plot_diagnostics

    extras = [{"epsilon": 1.0, "epsilon_outsider": 1.0, "epsilon_per_client": [0.5, 1.0],
               "snr_estimate": 0.2},
              {"epsilon": 2.0, "epsilon_outsider": 2.0, "epsilon_per_client": [0.5, 2.0],
               "snr_estimate": math.inf},
              {"epsilon": 3.0, "epsilon_outsider": 3.0, "epsilon_per_client": [1.5, 3.0]}]
    history = History([RoundRecord(r + 1, [], None, 0.0, 0, 0, extra=e)
                       for r, e in enumerate(extras)])
    assert plot_diagnostics(history, tmp_path / "d.png").is_file()
    drawn = {line.get_label(): line.get_xydata().tolist()
             for ax in figures["d.png"].axes for line in ax.get_lines()}
    assert drawn == {"snr_estimate": [[1, 0.2]],
                     "epsilon": [[1, 1.0], [2, 2.0], [3, 3.0]],
                     "epsilon_per_client min": [[1, 0.5], [2, 0.5], [3, 1.5]]}
