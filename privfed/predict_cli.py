"""``privfed predict RUN_DIR DATA``: the final model's predictions for new data.

DATA is ``test`` (the run's own central test set, as it evaluated it) or, for a run on a
site's own files, a file (or image folder) in the run's data format: a CSV/Parquet file
with the same feature columns (the label column may be absent), an ``.npz`` or an image
folder. It is preprocessed as the run preprocessed its data: pixel scalings by their
public constants, and under "site" scaling standardised with its own statistics, as the run
standardised each client's data and its central test set (a further site). So no
statistic of a training client's data is kept in the run directory or needed here.

The run directory must be complete and intact (its ``SHA256SUMS``): an edited model file
is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from privfed.clientdata import file_spec, load_configured_dataset
from privfed.config import ConfigError, ExperimentConfig
from privfed.data.files.tabular import encode_features, read_table
from privfed.data.sites import load_site_dataset, standardize_client
from privfed.federated.evaluation import predict_logits
from privfed.model_file import build_saved_model, read_model, verified_config

__all__ = ["TEST_SPLIT", "predict", "prediction_inputs", "register"]

TEST_SPLIT = "test"
"""DATA naming the run's own central test set."""


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``privfed`` command line."""
    parser = commands.add_parser(
        "predict", help="predict classes (and probabilities) for new data with a run's model",
        description="write the predicted class and each class's probability for every "
                    "example of DATA, preprocessed as the run preprocessed its data")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a complete run directory")
    parser.add_argument("data", metavar="DATA",
                        help=f"'{TEST_SPLIT}' (the run's central test set) or, for a run on "
                             "a site's files, a file or image folder in the run's format")
    parser.add_argument("--output", default="predictions.csv",
                        help="CSV file to write, or Parquet where it ends in .parquet "
                             "(default: predictions.csv)")
    parser.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    table = predict(args.run_dir, args.data)
    output = Path(args.output)
    try:
        if output.suffix == ".parquet":
            table.to_parquet(output, index=False)
        else:
            table.to_csv(output, index=False)
    except (OSError, ImportError, ValueError) as err:
        raise ConfigError(f"--output {output}: cannot write it ({err})") from None
    print(f"{len(table)} predictions written to {output}")
    return 0


def predict(run_dir: str | Path, data: str | Path) -> pd.DataFrame:
    """The run's final model's predictions for ``data``.

    Parameters
    ----------
    run_dir : path
        A complete, intact run directory.
    data : str or path
        :data:`TEST_SPLIT` or a file in the run's data format (:func:`prediction_inputs`).

    Returns
    -------
    pandas.DataFrame
        One row per example: ``predicted`` (the class: its name where ``data.classes``
        names them, else its index) and ``probability_<class>`` for each class.

    Raises
    ------
    ConfigError
        The run directory is refused, or DATA does not fit the run.
    """
    config = verified_config(run_dir)
    record = read_model(run_dir)
    x = prediction_inputs(config, data)
    expected = tuple(record["model"]["input_shape"])
    if x.shape[1:] != expected:
        raise ConfigError(f"DATA {data}: its examples have shape {x.shape[1:]}, the model "
                          f"takes {expected}")
    logits = predict_logits(build_saved_model(record), torch.from_numpy(x))
    probabilities = torch.softmax(logits.double(), 1).numpy()
    classes = list(config.data.classes or range(probabilities.shape[1]))
    table = pd.DataFrame({"predicted": np.asarray(classes)[logits.argmax(1).numpy()]})
    for k, name in enumerate(classes):
        table[f"probability_{name}"] = probabilities[:, k]
    return table


def prediction_inputs(config: ExperimentConfig, data: str | Path) -> np.ndarray:
    """``data``'s examples, float32, preprocessed as the run of ``config`` preprocessed its
    own (see the module's docstring).

    Raises
    ------
    ConfigError
        DATA is a file for a run on a built-in dataset, or the run's test set is empty.
    privfed.data.DataFormatError
        The file does not fit the run's format.
    """
    if str(data) == TEST_SPLIT:
        x = load_configured_dataset(config).x_test
        if not len(x):
            raise ConfigError(f"DATA {TEST_SPLIT}: this run has no central test set; give a "
                              "file")
        return x
    settings = config.data
    if not settings.is_site_data:
        raise ConfigError(f"DATA {data}: a run on the built-in dataset {settings.dataset!r} "
                          f"predicts on '{TEST_SPLIT}' only")
    if settings.dataset in ("csv", "parquet"):
        x = _table_features(config, Path(data))
    else:
        x = load_site_dataset(file_spec(settings, str(data)), [str(data)], test_path=None,
                              natural=True, test_fraction=settings.test_fraction,
                              split_seed=settings.split_seed,
                              scaling=settings.site_scaling)[0].x_train
    return standardize_client(x, None)[0] if settings.site_scaling == "site" else x


def _table_features(config: ExperimentConfig, path: Path) -> np.ndarray:
    """The feature matrix of a CSV/Parquet file, encoded as the run encoded its own."""
    spec = file_spec(config.data, str(path))
    frame = read_table(path, spec.format)
    features = list(spec.feature_columns or
                    [c for c in frame.columns if c not in (spec.label_column, spec.group_column)])
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ConfigError(f"DATA {path}: feature column(s) {', '.join(missing)} not found")
    spec = dataclasses.replace(spec, feature_columns=tuple(features))
    return encode_features(frame, features, spec, path)[0]
