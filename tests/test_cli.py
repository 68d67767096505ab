import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import privfed
from privfed.cli import _parser, config_overrides, main
from privfed.config import load_config

DIGITS = str(Path(__file__).parents[1] / "experiments" / "configs" / "digits.toml")


def test_run_writes_a_complete_run_directory(tmp_path, capsys):
    status = main(["run", DIGITS, "--set", "federation.rounds=3", "--set", "model.hidden=[16]",
                   "--output-dir", str(tmp_path), "--quiet"])
    assert status == 0
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("digits-mlp-")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    # 3 rounds of a tiny MLP are far from converged (~0.6) but well above chance (0.1).
    assert summary["rounds"] == 3 and 0.3 < summary["final_accuracy"] <= 1.0
    # Down: the global model, 10 clients x (64*16 + 16 + 16*10 + 10) float32, per round.
    # Up: the same payload plus a small signed header per message.
    payload = 3 * 10 * 4 * 1210
    assert summary["bytes_down_total"] == payload
    assert 0 < summary["bytes_up_total"] - payload <= 3 * 10 * 200
    assert (run_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rounds = 3" in (run_dir / "config.toml").read_text()
    model = torch.load(run_dir / "model.pt")["state_dict"]
    assert [tuple(t.shape) for t in model.values()] == [(16, 64), (16,), (10, 16), (10,)]
    assert capsys.readouterr().out == ""
    # A run directory stands for its config: the same config (and hash) comes back.
    assert main(["config", str(run_dir)]) == 0
    assert capsys.readouterr().out == (run_dir / "config.toml").read_text()


def test_config_command_prints_resolved_toml(capsys):
    assert main(["config", "--set", "federation.lr=0.2", "--seed", "9"]) == 0
    out = capsys.readouterr().out
    assert "seed = 9" in out and "lr = 0.2" in out


def test_config_command_prints_every_key_and_reads_back_to_the_same_hash(tmp_path, capsys):
    config = load_config(overrides=["data.dataset=breast_cancer", "federation.rounds=2"])
    assert main(["config", "--set", "data.dataset=breast_cancer",
                 "--set", "federation.rounds=2"]) == 0
    out = capsys.readouterr().out
    assert "# data_dir = <unset>\n" in out and "# buffer_size = <unset>\n" in out
    for section in ("data", "model", "federation", "privacy", "secure", "compression", "audit"):
        for field in dataclasses.fields(getattr(config, section)):
            assert re.search(rf"^#? ?{field.name} = |^\[{section}\.{field.name}\]$", out,
                             re.MULTILINE), (section, field.name)
    saved = tmp_path / "c.toml"
    saved.write_text(out)
    assert load_config(saved) == config
    assert load_config(saved).short_hash() == config.short_hash()


def test_version_option_and_module_entry_point(capsys):
    assert privfed.__version__ == importlib.metadata.version("privfed")
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"privfed {privfed.__version__}\n"
    module = subprocess.run([sys.executable, "-m", "privfed", "--version"], text=True,
                            capture_output=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert module.stdout == f"privfed {privfed.__version__}\n"


def test_default_run_name_follows_dataset_and_model():
    assert load_config().name == "digits-mlp"
    assert load_config(overrides=["data.dataset=breast_cancer", "model.name=logistic"]
                       ).name == "breast_cancer-logistic"
    assert load_config(overrides=["model.name=my_models.nets:wide_net"]).name == "digits-wide_net"
    assert load_config(overrides=["name=mine", "model.name=cnn"]).name == "mine"
    assert 'name = "digits-cnn"' in load_config(overrides=["model.name=cnn"]).to_toml()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.colour=1"], "unknown key"),
        (["--set", "data.num_clients=2000"], "2000"),
        (["--set", "data.dataset=mnist", "--data-dir", "/nonexistent/privfed-data"],
         "train-images-idx3-ubyte"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, capsys, tmp_path, monkeypatch):
    import privfed.data.download as download

    def offline(*_args, **_kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(download, "fetch_url", offline)
    assert main(["run", *args, "--output-dir", str(tmp_path), "-q"]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_plug_in_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("audit", "sweep", "report"):
        assert f"    {command} " in out


def test_audit_command_writes_a_leakage_report(tmp_path, capsys):
    status = main(["audit", "--quick", "--set", "federation.rounds=3", "--set",
                   "model.hidden=[16]", "--out", str(tmp_path)])
    assert status == 0
    report = json.loads((tmp_path / "leakage.json").read_text())
    assert report["epsilon_audit"]["violation"] is False
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "inversion: single" in capsys.readouterr().out


def test_keygen_and_pin_make_the_files_a_node_pins(tmp_path, capsys):
    from privfed.secure import ClientIdentity, IdentityRegistry

    for client_id in (0, 1):
        assert main(["keygen", str(client_id), "--out", str(tmp_path / "keys")]) == 0
    assert (tmp_path / "keys" / "site-0.pem").stat().st_mode & 0o777 == 0o600
    assert main(["keygen", "0", "--out", str(tmp_path / "keys")]) == 2  # never overwrites
    assert "exists; keygen never overwrites" in capsys.readouterr().err
    publics = [str(tmp_path / "keys" / f"site-{c}.json") for c in (0, 1)]
    assert main(["pin", *publics, "--out", str(tmp_path / "network.json")]) == 0
    pinned = IdentityRegistry.from_file(tmp_path / "network.json")
    site = ClientIdentity.from_file(1, tmp_path / "keys" / "site-1.pem")
    assert pinned.keys == {0: pinned.keys[0], 1: site.public_bytes}
    IdentityRegistry({0: ClientIdentity(0).public_bytes}).to_file(tmp_path / "other.json")
    assert main(["pin", publics[0], str(tmp_path / "other.json"), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "client 0 has two different keys" in capsys.readouterr().err
    assert main(["keygen", "-1", "--out", str(tmp_path)]) == 2
    assert "keygen CLIENT_ID: client id -1 outside" in capsys.readouterr().err


def test_run_without_config_is_the_main_job_with_the_same_options(monkeypatch, capsys):
    import experiments.cli

    seen = []
    monkeypatch.setattr(experiments.cli, "run_main_job", lambda args: seen.append(args) or 7)
    options = ["--set", "federation.rounds=2", "--seed", "3", "--output-dir", "out", "-q"]
    assert main(["run", *options]) == 7
    assert main(["compare", *options]) == 7
    assert main(["run", "--engine", "inprocess", *options]) == 7
    assert vars(seen[0]) == vars(seen[1]) == vars(seen[2])
    assert main(["run", "--engine", "flower-sim"]) == 2
    assert "needs a CONFIG" in capsys.readouterr().err


def test_run_without_config_and_without_the_main_job_plug_in_exits_2(monkeypatch, capsys):
    import privfed.cli

    installed = privfed.cli.entry_points
    monkeypatch.setattr(privfed.cli, "entry_points", lambda group: [
        e for e in installed(group=group) if e.name != privfed.cli.MAIN_JOB])
    assert main(["run", "-q"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and err.count("error") == 1
    assert "`privfed compare`" in err and "give a CONFIG" in err


def test_the_console_script_is_this_main(capsys):
    """`privfed` installed and `privfed.cli.main` from Python are one function: `privfed
    run` without CONFIG means the main job in both."""
    import importlib
    import tomllib

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["privfed"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is main
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "without CONFIG, run the main job, `privfed compare`, with the same options" in text


def test_a_global_model_that_leaves_the_float_range_stops_the_run_with_one_line(tmp_path,
                                                                               capsys):
    config = tmp_path / "c.toml"
    config.write_text("[model]\nhidden = [8]\n[federation]\nrounds = 3\nserver_lr = 1e30\n"
                      "federated_eval_every = 1\n[data]\nnum_clients = 3\n"
                      "validation_fraction = 0.25\n")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "runs"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "the global model" in err and "NaN/Inf" in err and "server_lr" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["audit"], ["compare"], ["sweep", "grid.toml"]])
def test_every_auditing_command_spells_the_quick_audit_quick(command):
    parser, _ = _parser()
    own_output_dir = command[0] != "sweep"  # the sweep's --output-dir is not output_dir
    args = parser.parse_args([*command, "--quick", "--set", "federation.rounds=2"])
    assert config_overrides(args, own_output_dir) == ["federation.rounds=2", "audit.quick=true"]
    assert config_overrides(parser.parse_args(command), own_output_dir) == []
