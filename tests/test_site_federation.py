"""A federation of sites' own files: natural partitions, per-site scaling, federated
evaluation (pooled, per client, through secure aggregation), and errors that train nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score

from privfed.cli import main
from privfed.clientdata import declared_schema, load_partitioned
from privfed.config import ConfigError, config_from_dict
from privfed.experiment import build_parts, build_simulation
from privfed.federated import RoundSkipped
from privfed.federated.evaluation import predict_logits
from privfed.federated.metrics import EvaluationCounts
from tests.site_helpers import FEATURES, site_config


def test_a_group_column_partitions_like_one_file_per_client(site_files) -> None:
    per_file = site_config(site_files)
    grouped = site_config(site_files, data={"client_paths": None, "path": str(site_files["all"]),
                                            "group_column": "site"})
    data_a, parts_a = load_partitioned(per_file)
    data_b, parts_b = load_partitioned(grouped)
    assert [len(p) for p in parts_a] == [len(p) for p in parts_b]
    for pa, pb in zip(parts_a, parts_b, strict=True):
        np.testing.assert_array_equal(data_a.x_train[pa], data_b.x_train[pb])
        np.testing.assert_array_equal(data_a.y_train[pa], data_b.y_train[pb])
    assert data_a.input_shape == (len(FEATURES) - 1 + 2,)  # scanner one-hot: A, B
    assert data_a.num_test == 0  # a natural partition has no central test set


def test_each_client_standardises_with_its_own_training_statistics(site_files) -> None:
    engine = build_simulation(site_config(site_files)).server.engine
    means = []
    for client in engine.clients:
        x = client.x.double()
        np.testing.assert_allclose(x.mean(0).numpy(), 0.0, atol=1e-5)
        std = x.std(0, unbiased=False).numpy()
        np.testing.assert_allclose(std[std > 0], 1.0, rtol=1e-4)
        raw_val_mean = client.validation[0].double().mean(0).numpy()
        means.append(raw_val_mean)
    # the held-out part is scaled with the client's training statistics, not its own
    assert not np.allclose(means[0], 0.0, atol=1e-3)


def _held_out_accuracy(engine, weights: torch.Tensor) -> float:
    engine.workspace.load(weights)
    xs = torch.cat([c.validation[0] for c in engine.clients])
    ys = torch.cat([c.validation[1] for c in engine.clients])
    predicted = predict_logits(engine.workspace.module, xs).argmax(1)
    return accuracy_score(ys.numpy(), predicted.numpy())


def test_pooled_accuracy_is_that_of_the_concatenated_hold_outs_and_worst_is_the_min(
        site_files) -> None:
    simulation = build_simulation(site_config(site_files))
    history = simulation.run()
    record = history.rounds[-1].federated
    server = simulation.server
    assert record["pooled"]["accuracy"] == _held_out_accuracy(server.engine, server.weights)
    per_client = {int(c): m["accuracy"] for c, m in record["clients"].items()}
    assert sorted(per_client) == [0, 1, 2]
    assert record["worst"]["accuracy"] == min(per_client.values())
    assert record["worst"]["client"] == min(per_client, key=per_client.get)
    assert record["pooled"]["n"] == sum(len(c.validation[1]) for c in server.engine.clients)
    assert history.rounds[-1].test_accuracy is None  # no central test set


@pytest.mark.parametrize("kind", ["masking", "he"])
def test_secure_aggregation_gives_the_same_counts_and_hides_each_client(site_files,
                                                                       kind) -> None:
    plain = build_simulation(site_config(site_files)).server
    secure = build_simulation(site_config(site_files, secure={"kind": kind})).server
    counts = EvaluationCounts(2)
    weights = plain.weights.clone()
    expected = plain.engine.evaluate(7, [0, 1, 2], weights, counts)
    got = secure.engine.evaluate(7, [0, 1, 2], weights, counts)
    loss = counts.num_classes**2
    mask = np.arange(counts.length) != loss
    np.testing.assert_array_equal(got.total[mask], expected.total[mask])
    # masking: stochastic rounding adds < one step (clip 10 / 2**31) per client to each of
    # the K = 3 encoded entries (loss / 100 / 2**16, averaged over K), so the decoded sum
    # moves by < K**2 * step * 2**16 * 100 = 0.28 nats; CKKS is far more precise.
    assert got.total[loss] == pytest.approx(expected.total[loss], abs=0.28)
    assert got.per_client == {} and len(expected.per_client) == 3
    assert got.included == (0, 1, 2)


def test_the_summary_flags_a_model_that_does_not_beat_the_majority(site_files, tmp_path,
                                                                   capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    config = tmp_path / "sites.toml"
    noise_only = site_config(site_files, data={"feature_columns": ["scanner"]},  # random A/B
                             federation={"rounds": 1})
    config.write_text(noise_only.to_toml())
    assert main(["run", str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if "majority-class baseline" in line]
    assert len(flagged) == 1 and "does NOT beat it" in flagged[0]


def test_a_malformed_site_file_is_named_and_nothing_is_trained(site_files, tmp_path,
                                                              capsys) -> None:
    broken = tmp_path / "hospital_b.csv"
    table = pd.read_csv(site_files["b"])
    table.loc[[3, 7], "mean_area"] = np.nan
    table.to_csv(broken, index=False)
    paths = [str(site_files["a"]), str(broken), str(site_files["c"])]
    config = tmp_path / "sites.toml"
    config.write_text(site_config(site_files, data={"client_paths": paths}).to_toml())
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--output-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "hospital_b.csv" in err and "mean_area" in err and "2" in err
    assert not runs.exists() or not any(runs.iterdir())


def test_a_deployment_needs_the_schema_declared(site_files) -> None:
    declared = declared_schema(site_config(site_files))
    assert declared.input_shape == (len(FEATURES) + 1,) and declared.num_classes == 2
    with pytest.raises(ConfigError, match=r"data\.feature_columns, data\.classes"):
        declared_schema(site_config(site_files, data={"feature_columns": None,
                                                      "classes": None}))


@pytest.mark.parametrize(("data", "message"), [
    ({"path": "x.csv"}, r"exactly one of data\.path .* and data\.client_paths"),
    ({"client_paths": ["a.csv", "b.csv"]}, r"names 2 files but data\.num_clients = 3"),
    ({"partition": "iid"}, r"data\.partition = 'natural' goes with data\.client_paths"),
    ({"scaling": "standard"}, r"data\.scaling: .*'site'"),
    ({"channels": 2}, r"data\.channels must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
    ({"image_size": [28]}, r"data\.image_size must be \[height, width\]"),
    ({"classes": ["a", "a"]}, r"data\.classes must list at least 2 distinct labels"),
    ({"validation_fraction": 0.0},
     r"federated_eval_every = 1 .*validation_fraction = 0 holds none"),
])
def test_site_settings_are_checked_when_the_config_is_read(site_files, data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        site_config(site_files, data=data)


def test_site_settings_do_not_apply_to_a_built_in_dataset() -> None:
    with pytest.raises(ConfigError, match=r"data\.path applies only to a site's own files"):
        config_from_dict({"data": {"dataset": "digits", "path": "x.csv"}})
    with pytest.raises(ConfigError, match=r"data\.categorical applies only to a site's"):
        config_from_dict({"data": {"dataset": "digits", "categorical": {"sex": ["f", "m"]}}})
    with pytest.raises(ConfigError, match=r"'natural' needs a site's own files"):
        config_from_dict({"data": {"dataset": "digits", "partition": "natural"}})


def test_local_dp_in_a_deployment_needs_a_stated_sample_rate(site_files) -> None:
    config = site_config(site_files, privacy={"mechanism": "local", "epsilon": 8.0,
                                              "delta": 1e-3})
    with pytest.raises(ConfigError, match=r"needs privacy\.sample_rate"):
        build_parts(config, declared_schema(config))
    stated = site_config(site_files, privacy={"mechanism": "local", "epsilon": 8.0,
                                              "delta": 1e-3, "sample_rate": 0.1})
    assert build_parts(stated, declared_schema(stated)).trainer.params.sample_rate == 0.1


def test_an_evaluation_the_protocol_cannot_release_is_skipped_not_fatal(site_files,
                                                                        monkeypatch) -> None:
    simulation = build_simulation(site_config(site_files))

    def too_few(*args, **kwargs):
        raise RoundSkipped("only 1 client responded, fewer than the threshold t=3")

    monkeypatch.setattr(simulation.server.engine, "evaluate", too_few)
    history = simulation.run()
    assert len(history.rounds) == 3
    record = history.rounds[-1].federated
    assert record["pooled"] is None and "threshold" in record["skipped"]


def test_the_audit_refuses_sites_own_files_with_a_reason(site_files, tmp_path) -> None:
    from attacks.runner import run_audit

    with pytest.raises(ConfigError, match=r"privfed audit needs a built-in dataset"):
        run_audit(site_config(site_files), tmp_path)
    assert not (tmp_path / "leakage.json").exists()


class _Inbox:
    """An observer keeping every message the server receives, as the server receives it."""

    def __init__(self) -> None:
        self.received: list[tuple[int, int, str, bytes]] = []

    def server_received(self, round_id: int, client_id: int, stage: str, message: bytes):
        self.received.append((round_id, client_id, stage, bytes(message)))

    def __getattr__(self, name: str):  # the other Observer events: nothing to keep
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("kind", ["none", "masking"])
def test_what_the_server_receives_of_a_clients_counts(site_files, kind) -> None:
    """The server's view of federated evaluation. In the clear it reads each client's counts
    from its message (so the per-client metrics it records are what it sees). Under masking
    no message holds a client's counts, encoded or not, and evaluating the same model twice
    gives different masked vectors: what the server receives of the data is masked by fresh
    randomness, not a function of the counts."""
    inbox = _Inbox()
    config = site_config(site_files, secure={"kind": kind},
                         federation={"rounds": 1, "federated_eval_every": 1})
    simulation = build_simulation(config, observers=[inbox])
    simulation.run()
    server, counts = simulation.server, EvaluationCounts(2)
    engine = server.engine
    vectors = {}
    for client in engine.clients:
        logits = predict_logits(engine.workspace.module, client.validation[0])
        vectors[client.client_id] = counts.from_logits(logits, client.validation[1])
    runs = []
    for _ in range(2):
        inbox.received.clear()
        engine.evaluate(1, [0, 1, 2], server.weights, counts, server.received_hook())
        runs.append([m for m in inbox.received if m[2].startswith("evaluation")])
    assert {client for _, client, _, _ in runs[0]} == {0, 1, 2}
    for _, client, stage, message in runs[0]:
        plain = vectors[client].astype("<f8").tobytes()
        encoded = counts.encode(vectors[client], 1 / 2**16).astype("<f4").tobytes()
        if kind == "none":
            assert stage == "evaluation" and message == plain
        else:
            assert stage.startswith("evaluation:") and plain not in message
            assert encoded not in message
    carrying = "evaluation" if kind == "none" else "evaluation:masked"  # the data's stage
    first, second = ([m[3] for m in run if m[2] == carrying] for run in runs)
    assert len(first) == len(second) == 3
    same = [a == b for a, b in zip(first, second, strict=True)]
    assert all(same) if kind == "none" else not any(same)


def test_a_site_whose_file_does_not_fit_the_declared_schema_is_named(site_files,
                                                                     tmp_path) -> None:
    from privfed.clientdata import file_spec, load_site
    from privfed.data import DataFormatError

    table = pd.read_csv(site_files["a"]).drop(columns="mean_area")
    path = tmp_path / "hospital_a.csv"
    table.to_csv(path, index=False)
    config = site_config(site_files)
    fewer = site_config(site_files, data={"feature_columns": [f for f in FEATURES
                                                              if f != "mean_area"]})
    with pytest.raises(DataFormatError, match=r"hospital_a\.csv.*mean_area"):
        load_site(config, file_spec(config.data, str(path)), 0)  # a named column is missing
    held = load_site(fewer, file_spec(fewer.data, str(path)), 0)
    assert held.x.shape[1] == len(FEATURES)  # 3 numeric + scanner one-hot (A, B)
    assert len(held.y_val) == round(0.25 * len(table))


def test_a_deployments_local_dp_is_calibrated_by_dp_accountings_pld(site_files) -> None:
    """The walkthrough's deployed config (ε = 8 at δ = 1e-3, stated q = 0.1): the noise the
    server and every site build from the declared schema gives, by an independent PLD
    computation, an epsilon at most the target and close to it; the run reports that."""
    from tests.privacy._reference import pld_epsilon

    config = site_config(site_files, privacy={"mechanism": "local", "epsilon": 8.0,
                                              "delta": 1e-3, "sample_rate": 0.1})
    params = build_parts(config, declared_schema(config)).trainer.params
    steps = config.federation.rounds * params.steps_per_round
    reference = pld_epsilon(params.noise_multiplier, 0.1, steps, 1e-3)
    assert 7.5 < reference <= 8.0 + 1e-6
    history = build_simulation(config).run()
    assert history.rounds[-1].extra["epsilon"] == pytest.approx(reference, rel=1e-3)
