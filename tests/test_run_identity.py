"""A run's identity covers the content of the data it reads (never a path alone) and a user's
model code: two data directories give two runs, the same content elsewhere gives one."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest

from experiments.sweep import load_grid, run_sweep
from privfed import jsonsafe
from privfed.cli import main
from privfed.config import load_config
from privfed.data.digest import file_token
from privfed.rundir import train_run
from tests.data.test_data_medmnist import make_arrays, write_npz
from tests.site_helpers import site_config

pytestmark = pytest.mark.filterwarnings("ignore::privfed.data.DataIntegrityWarning")

SMALL = ["data.dataset=breastmnist", "data.num_clients=2", "federation.rounds=2",
         "model.name=logistic"]


@pytest.fixture
def data_dirs(tmp_path):
    """Two data directories holding a different breastmnist.npz each."""
    dirs = [tmp_path / "data-a", tmp_path / "data-b"]
    for seed, folder in enumerate(dirs):
        write_npz(folder / "breastmnist.npz", make_arrays(seed=seed))
    return dirs


def _config(data_dir, *more):
    return load_config(overrides=[*SMALL, f"data.data_dir='{data_dir}'", *more])


def test_the_default_run_keeps_its_identity():
    assert load_config().short_hash() == "e22b83ea"  # embedded data: no file is read


def test_two_data_directories_are_two_runs_and_the_same_content_elsewhere_one(data_dirs,
                                                                             tmp_path):
    a, b = (_config(d).short_hash() for d in data_dirs)
    assert a != b
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    shutil.copy(data_dirs[0] / "breastmnist.npz", copy / "breastmnist.npz")
    assert _config(copy).short_hash() == a
    (copy / "breastmnist.npz").write_bytes((data_dirs[1] / "breastmnist.npz").read_bytes())
    assert _config(copy).short_hash() == b  # rewritten in place: the new content's run


def test_a_sweep_over_two_data_directories_trains_and_reports_each(data_dirs, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("[base]\nname = 'dirs'\n[base.data]\ndataset = 'breastmnist'\n"
                    "num_clients = 2\n[base.federation]\nrounds = 2\n[base.model]\n"
                    "name = 'logistic'\n[grid]\n"
                    f"'data.data_dir' = ['{data_dirs[0]}', '{data_dirs[1]}']\n")
    points = load_grid(grid)
    assert len({p.key for p in points}) == 2
    outcome = run_sweep(points, tmp_path / "sweep")
    assert len(outcome["done"]) == 2
    for point, data_dir in zip(points, data_dirs, strict=True):
        saved = jsonsafe.loads((tmp_path / "sweep" / point.key / "summary.json").read_text(),
                               keep=("name",))
        alone = train_run(_config(data_dir, "name='dirs'"), tmp_path / "alone" / point.key)
        assert saved["final_loss"] == alone.summary["final_loss"]
    losses = {jsonsafe.loads((tmp_path / "sweep" / p.key / "summary.json").read_text(),
                             keep=("name",))["final_loss"] for p in points}
    assert len(losses) == 2


def test_two_runs_with_different_data_dirs_write_two_directories(data_dirs, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(load_config(overrides=[*SMALL, "name=cli"]).to_toml())
    for data_dir in data_dirs:
        assert main(["run", str(config), "--data-dir", str(data_dir), "-q"]) == 0
    assert len([p for p in (tmp_path / "runs").iterdir() if p.name.startswith("cli-")]) == 2


def test_a_site_file_edited_in_place_is_another_run_and_a_moved_one_the_same(site_files,
                                                                            tmp_path):
    files = {site: tmp_path / path.name for site, path in site_files.items()}
    for site, path in site_files.items():
        shutil.copy(path, files[site])
    original = site_config(files).short_hash()
    text = files["a"].read_text()
    files["a"].write_text(text.replace("malignant", "benign", 1))
    assert site_config(files).short_hash() != original
    files["a"].write_text(text)
    moved = {site: tmp_path / f"moved_{path.name}" for site, path in files.items()}
    for site, path in files.items():
        shutil.move(path, moved[site])
    assert site_config(moved).short_hash() == original
    swapped = {**moved, "a": moved["b"], "b": moved["a"]}  # client order is identity
    assert site_config(swapped).short_hash() != original


def test_a_users_model_module_is_part_of_the_identity(tmp_path, monkeypatch):
    module = tmp_path / "identity_user_model.py"
    module.write_text("from torch import nn\n\ndef build(input_shape, num_classes, seed):\n"
                      "    return nn.Linear(input_shape[0], num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config(overrides=["model.name='identity_user_model:build'"])
    before = config.short_hash()
    module.write_text(module.read_text() + "# changed\n")
    assert config.short_hash() != before


def test_file_tokens_name_official_content_wherever_and_however_it_lies(tmp_path):
    raw = b"the official content"
    official = hashlib.md5(raw).hexdigest()
    plain, packed, other = tmp_path / "f", tmp_path / "f.gz", tmp_path / "g"
    plain.write_bytes(raw)
    packed.write_bytes(gzip.compress(raw, mtime=12345))  # another gzip wrapper than published
    other.write_bytes(b"other content")
    assert file_token(plain, [official]) == "official"
    assert file_token(packed, ["md5 of the published .gz", official]) == "official"
    assert file_token(other, [official]) == f"sha256:{hashlib.sha256(b'other content').hexdigest()}"
    assert file_token(tmp_path / "missing", [official]) == "official"  # a download is checked
    assert file_token(tmp_path / "missing") == "absent"


def test_relative_data_paths_are_stored_resolved_and_keep_the_run_identity(site_files, tmp_path,
                                                                           monkeypatch):
    absolute = site_config(site_files)
    (tmp_path / "configs").mkdir()
    saved = tmp_path / "configs" / "sites.toml"  # paths in a file: relative to the file
    saved.write_text(absolute.to_toml().replace(str(site_files["a"].parent), "../sites"))
    shutil.copytree(site_files["a"].parent, tmp_path / "sites")
    monkeypatch.chdir(tmp_path / "configs")
    from_file = load_config("sites.toml")
    assert from_file.data.client_paths == [str(tmp_path / "sites" / p.name)
                                           for p in (site_files[s] for s in "abc")]
    assert from_file.short_hash() == absolute.short_hash()  # the content, not the path
    monkeypatch.chdir(tmp_path)  # an override's path: relative to the working directory
    overridden = load_config("configs/sites.toml", ["data.test_path=sites/all.csv",
                                                    "data.data_dir=~/privfed-data"])
    assert overridden.data.test_path == str(tmp_path / "sites" / "all.csv")
    assert overridden.data.data_dir == str(Path.home() / "privfed-data")
    (tmp_path / "sites" / "run").mkdir()
    copy = tmp_path / "sites" / "run" / "config.toml"  # a saved config reads the same files
    copy.write_text(overridden.to_toml())
    assert load_config(copy).data == overridden.data
