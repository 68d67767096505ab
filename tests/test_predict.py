"""``privfed predict`` and ``privfed.load_model``: a run's model, usable afterwards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import privfed
from privfed import jsonsafe
from privfed.cli import main
from privfed.clientdata import file_spec, load_configured_dataset
from privfed.config import load_config
from privfed.data.sites import load_site_dataset, standardize_client
from privfed.rundir import train_run
from tests.site_helpers import site_config

SMALL = ["federation.rounds=2", "model.hidden=[8]", "data.num_clients=3"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    config = load_config(overrides=SMALL)
    return train_run(config, tmp_path_factory.mktemp("runs") / "digits")


def test_predict_on_the_test_split_reproduces_the_final_accuracy(digits_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["predict", str(digits_run.run_dir), "test", "--output", str(out)]) == 0
    assert capsys.readouterr().out == f"360 predictions written to {out}\n"
    table = pd.read_csv(out)
    assert list(table.columns) == ["predicted", *(f"probability_{k}" for k in range(10))]
    np.testing.assert_allclose(table.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-9)
    labels = load_configured_dataset(digits_run.config).y_test
    summary = jsonsafe.loads((digits_run.run_dir / "summary.json").read_text(), keep=("name",))
    assert (table["predicted"].to_numpy() == labels).mean() == summary["final_accuracy"]


def test_load_model_is_the_trained_module_with_its_buffers(digits_run):
    model = privfed.load_model(digits_run.run_dir)
    assert not model.training
    record = torch.load(digits_run.run_dir / "model.pt", weights_only=True)
    assert record["model"] == {"name": "mlp", "options": {"hidden": (8,)}, "seed": 0,
                               "fix_for_dp": False, "input_shape": [1, 8, 8], "num_classes": 10}
    assert record["preprocessing"] == {"dataset": "digits", "scaling": None}
    assert list(record["state_dict"]) == list(model.state_dict())
    x = torch.from_numpy(load_configured_dataset(digits_run.config).x_test)
    digits_run.server.workspace.load(digits_run.server.weights)
    with torch.no_grad():
        assert torch.equal(model(x), digits_run.server.workspace.module(x))


def test_a_tampered_model_file_is_refused(digits_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in digits_run.run_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    record = torch.load(copy / "model.pt", weights_only=True)
    first = next(iter(record["state_dict"]))
    record["state_dict"][first] = record["state_dict"][first] + 1
    torch.save(record, copy / "model.pt")
    assert main(["predict", str(copy), "test", "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and "model.pt" in err
    assert not (tmp_path / "p.csv").exists()


def test_a_built_in_run_predicts_on_its_test_split_only(digits_run, tmp_path, capsys):
    assert main(["predict", str(digits_run.run_dir), str(tmp_path / "x.npz")]) == 2
    assert "predicts on 'test' only" in capsys.readouterr().err


def test_predict_on_a_site_file_preprocesses_it_as_the_run_did(site_files, tmp_path):
    config = site_config(site_files)
    result = train_run(config, tmp_path / "run")
    out = tmp_path / "p.csv"
    assert main(["predict", str(result.run_dir), str(site_files["a"]), "--output", str(out)]) == 0
    data = config.data
    dataset, _ = load_site_dataset(file_spec(data, str(site_files["a"])), [str(site_files["a"])],
                                   test_path=None, natural=True, test_fraction=0.2,
                                   split_seed=0, scaling="site")
    x = torch.from_numpy(standardize_client(dataset.x_train, None)[0])
    result.server.workspace.load(result.server.weights)
    with torch.no_grad():
        expected = result.server.workspace.module(x).argmax(1).numpy()
    table = pd.read_csv(out)
    assert table["predicted"].tolist() == [data.classes[k] for k in expected]
    assert len(set(table["predicted"])) == 2  # the model tells the classes apart
    unlabeled = tmp_path / "new.csv"
    pd.read_csv(site_files["a"]).drop(columns="diagnosis").to_csv(unlabeled, index=False)
    assert main(["predict", str(result.run_dir), str(unlabeled), "--output", str(out)]) == 0
    assert pd.read_csv(out)["predicted"].tolist() == table["predicted"].tolist()
