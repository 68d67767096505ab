"""Three sites on a loopback Flower deployment, each SuperNode reading only its own CSV file:
the server opens no data file, and the final model and federated evaluation equal the
in-process run with the same three files as a natural partition."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

from privfed.experiment import build_simulation  # noqa: E402
from privfed.integrations.flower.engine import FlowerOptions  # noqa: E402
from privfed.integrations.flower.engines import run_flower_deployment  # noqa: E402
from privfed.integrations.flower.local import LocalDeployment  # noqa: E402
from tests.site_helpers import SITE_SIZES, site_config  # noqa: E402


@pytest.mark.slow
def test_each_supernode_reads_its_own_file_and_the_server_none(site_files, tmp_path: Path):
    config = site_config(site_files, federation={"rounds": 2, "federated_eval_every": 2})
    own_files = {i: {"data-path": str(site_files[site])} for i, site in enumerate(SITE_SIZES)}
    # The server's copy of the config names files that do not exist: had it opened one, the
    # run would fail. The nodes read the files their node config names.
    nowhere = [str(tmp_path / "nowhere" / f"{site}.csv") for site in SITE_SIZES]
    server_view = dataclasses.replace(
        config, data=dataclasses.replace(config.data, client_paths=nowhere))
    run_dir = tmp_path / "deployed"
    with LocalDeployment(3, workdir=tmp_path / "flower", node_config=own_files) as deployment:
        status = run_flower_deployment(server_view, deployment.address, run_dir=run_dir,
                                       insecure=True, options=FlowerOptions(stage_timeout=240),
                                       timeout=540)
        assert status == 0, deployment.log("superlink")[-3000:]

    simulation = build_simulation(config)
    history = simulation.run()
    spec = simulation.server.workspace.spec
    deployed = spec.flatten(torch.load(run_dir / "model.pt")["state_dict"])
    assert torch.equal(deployed, simulation.server.weights)  # plain: no aggregation error
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["federated"]["pooled"] == history.rounds[-1].federated["pooled"]
    assert records[-1]["federated"]["worst"] == history.rounds[-1].federated["worst"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_accuracy"] is None  # no central test set: the server has no data
    assert summary["federated_metrics"]["pooled"]["n"] > 0
