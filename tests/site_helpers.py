"""Three hospitals' CSV files (scikit-learn's breast-cancer table split unevenly by a site
column) and a config that federates them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from privfed.config import ExperimentConfig, config_from_dict

FEATURES = ["mean_radius", "mean_texture", "mean_area", "mean_smoothness", "scanner"]
SITE_SIZES = {"a": 0.6, "b": 0.3, "c": 0.1}


def _table() -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True).frame
    table = pd.DataFrame({
        "mean_radius": data["mean radius"], "mean_texture": data["mean texture"],
        "mean_area": data["mean area"], "mean_smoothness": data["mean smoothness"],
    })
    table["scanner"] = np.random.default_rng(1).choice(["A", "B"], size=len(table))
    table["diagnosis"] = np.where(data["target"] == 0, "malignant", "benign")
    table["site"] = np.random.default_rng(0).choice(list(SITE_SIZES), size=len(table),
                                                    p=list(SITE_SIZES.values()))
    return table


@pytest.fixture(scope="module")
def site_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One CSV with a site column, and the same rows as one CSV per site."""
    root = tmp_path_factory.mktemp("sites")
    table = _table()
    files = {"all": root / "all.csv"}
    table.to_csv(files["all"], index=False)
    for site in SITE_SIZES:
        files[site] = root / f"hospital_{site}.csv"
        table[table["site"] == site].drop(columns="site").to_csv(files[site], index=False)
    return files


def site_config(files: dict[str, Path], **sections: dict[str, Any]) -> ExperimentConfig:
    """Three hospitals, one file each, logistic regression, federated evaluation."""
    raw: dict[str, Any] = {
        "name": "sites",
        "data": {"dataset": "csv", "partition": "natural", "num_clients": 3,
                 "client_paths": [str(files[s]) for s in SITE_SIZES],
                 "label_column": "diagnosis", "feature_columns": FEATURES,
                 "categorical": {"scanner": ["A", "B"]}, "classes": ["benign", "malignant"],
                 "validation_fraction": 0.25},
        "model": {"name": "logistic"},
        "federation": {"rounds": 3, "lr": 0.5, "federated_eval_every": 1},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config_from_dict(raw)
