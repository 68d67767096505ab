"""Do the shipped image configs learn? Accuracy and ROC AUC against the majority class.

Usage::

    python benchmarks/image_defaults.py --data-dir /work/shared/data \\
        --file pneumoniamnist=/work/shared/data/medmnist/pneumoniamnist_reassembled.npz
    python benchmarks/image_defaults.py experiments/configs/breastmnist.toml --seeds 0
    python benchmarks/image_defaults.py breastmnist.toml --set federation.lr=0.02

Trains every config in ``experiments/configs`` whose dataset is an image set (MNIST,
Fashion-MNIST, the MedMNIST 2D sets), or the configs named, once per seed, exactly as
shipped (``--set`` overrides apply to every config, for sweeps). A config whose data is not in
the data directory is skipped with a line saying so; nothing is downloaded. ``--file
NAME=PATH`` reads dataset NAME from one file instead (e.g. a re-assembled MedMNIST ``.npz``).

Per config and seed it prints the final global model's test accuracy, the majority-class
baseline (the test share of the most frequent training class: what a model that never learns
scores), how many points the accuracy is above it (negative: the model learned nothing
useful) and the ROC AUC of the model's softmax on the test set (binary: of the positive class;
multi-class: the unweighted mean of the one-vs-rest AUCs, as MedMNIST's evaluator computes
it), then the mean over seeds beside MedMNIST v2's published centralised figures: ResNet-18 at
28x28 and the best ACC and AUC of any method in Yang et al., "MedMNIST v2 - A large-scale
lightweight benchmark for 2D and 3D biomedical image classification", Scientific Data 10, 41
(2023), Table 3 (the mean of at least three trials each; trained on the pooled training set,
model selected on the validation split). privfed's runs are federated, use McMahan's small
CNN and no validation split, so the published figures are a reference, not a target.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from privfed.config import ExperimentConfig, load_config
from privfed.data import Dataset, DatasetNotFoundError, load_dataset
from privfed.data.medmnist import MEDMNIST_SPECS
from privfed.data.mnist import IDX_SPECS
from privfed.experiment import build_simulation

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
IMAGE_DATASETS = frozenset(IDX_SPECS) | frozenset(MEDMNIST_SPECS)


@dataclass(frozen=True)
class Published:
    """MedMNIST v2's centralised test figures for one dataset (Yang et al. 2023, Table 3).

    Attributes
    ----------
    resnet18_acc, resnet18_auc : float
        ResNet-18 at 28x28.
    best_acc, best_auc : float
        The best of any method in the table (ResNet-18/50 at 28 or 224, auto-sklearn,
        AutoKeras, Google AutoML Vision).
    """

    resnet18_acc: float
    resnet18_auc: float
    best_acc: float
    best_auc: float


PUBLISHED: dict[str, Published] = {
    "pathmnist": Published(0.907, 0.983, 0.911, 0.990),
    "dermamnist": Published(0.735, 0.917, 0.768, 0.920),
    "octmnist": Published(0.743, 0.943, 0.776, 0.963),
    "pneumoniamnist": Published(0.854, 0.944, 0.946, 0.991),
    "retinamnist": Published(0.524, 0.717, 0.531, 0.750),
    "breastmnist": Published(0.863, 0.901, 0.863, 0.919),
    "bloodmnist": Published(0.958, 0.998, 0.966, 0.998),
    "tissuemnist": Published(0.676, 0.930, 0.703, 0.941),
    "organamnist": Published(0.935, 0.997, 0.951, 0.998),
    "organcmnist": Published(0.900, 0.992, 0.920, 0.994),
    "organsmnist": Published(0.782, 0.972, 0.813, 0.975),
}
"""Test ACC and AUC from MedMNIST v2, Table 3, for each MedMNIST 2D set privfed loads."""


@dataclass(frozen=True)
class Result:
    """One trained config and seed."""

    config: str
    dataset: str
    seed: int
    rounds: int
    accuracy: float
    majority: float
    auc: float
    seconds: float


def image_configs(directory: Path = CONFIG_DIR) -> list[Path]:
    """The configs in ``directory`` whose dataset is an image set, by name (sweep grids,
    which have no ``[data]`` table of their own, are not configs)."""
    return sorted(path for path in directory.glob("*.toml")
                  if tomllib.loads(path.read_text(encoding="utf-8")).get("data", {}).get(
                      "dataset") in IMAGE_DATASETS)


def majority_baseline(dataset: Dataset) -> float:
    """Test accuracy of always predicting the most frequent training class."""
    majority = np.bincount(dataset.y_train, minlength=dataset.num_classes).argmax()
    return float(np.mean(dataset.y_test == majority))


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of class probabilities ``(N, C)``: of class 1 when ``C == 2``, else the
    unweighted mean of the one-vs-rest AUCs (MedMNIST's ``getAUC``)."""
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro",
                               labels=np.arange(probabilities.shape[1])))


def train_and_score(config: ExperimentConfig, dataset: Dataset, name: str) -> Result:
    """Train ``config`` on ``dataset``; score the final global model on the test set."""
    started = time.perf_counter()
    simulation = build_simulation(config, dataset=dataset)
    simulation.run()
    server = simulation.server
    server.workspace.load(server.weights)
    module = server.workspace.module.eval()
    with torch.no_grad():
        batches = torch.from_numpy(dataset.x_test).split(2048)
        logits = torch.cat([module(batch) for batch in batches])
    probabilities = torch.softmax(logits, dim=1).numpy()
    return Result(
        config=name, dataset=dataset.name, seed=config.seed,
        rounds=server.round, accuracy=float(np.mean(probabilities.argmax(1) == dataset.y_test)),
        majority=majority_baseline(dataset), auc=roc_auc(probabilities, dataset.y_test),
        seconds=time.perf_counter() - started,
    )


def load_data(config: ExperimentConfig, files: dict[str, str], data_dir: str | None) -> Dataset:
    """The config's dataset from ``files[name]`` or the data directory; never downloaded."""
    data = config.data
    source = files.get(data.dataset, data_dir if data_dir is not None else data.data_dir)
    return load_dataset(data.dataset, data_dir=source, scaling=data.scaling, download=False)


def points(difference: float) -> str:
    """An accuracy difference in percentage points, signed: ``+10.7 pts``."""
    return f"{100 * difference:+.1f} pts"


def format_row(cells: Sequence[object]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def published_cells(dataset: str) -> list[str]:
    """ResNet-18 (28) and best ACC / AUC of ``dataset``, or dashes (not MedMNIST)."""
    ref = PUBLISHED.get(dataset)
    if ref is None:
        return ["-", "-"]
    return [f"{ref.resnet18_acc:.3f} / {ref.resnet18_auc:.3f}",
            f"{ref.best_acc:.3f} / {ref.best_auc:.3f}"]


def summary_rows(results: Sequence[Result]) -> list[str]:
    """Per config: mean (min..max) over seeds beside the published figures."""
    rows = []
    for name in dict.fromkeys(r.config for r in results):
        runs = [r for r in results if r.config == name]
        acc = [r.accuracy for r in runs]
        auc = [r.auc for r in runs]
        rows.append(format_row([
            name, runs[0].rounds, len(runs),
            f"{statistics.mean(acc):.3f} ({min(acc):.3f}..{max(acc):.3f})",
            f"{statistics.mean(auc):.3f} ({min(auc):.3f}..{max(auc):.3f})",
            f"{runs[0].majority:.3f}", points(min(acc) - runs[0].majority),
            *published_cells(runs[0].dataset),
        ]))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path,
                        help="config files (a bare name is looked for in experiments/configs); "
                             "default: every image config there")
    parser.add_argument("--data-dir", help="data directory (default: each config's, "
                                           "$PRIVFED_DATA or the user cache)")
    parser.add_argument("--file", action="append", default=[], metavar="DATASET=PATH",
                        help="read DATASET from this file (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every config (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    files = dict(item.split("=", 1) for item in args.file)
    paths = [p if p.exists() else CONFIG_DIR / p for p in args.configs] or image_configs()
    results: list[Result] = []
    print(format_row(["config", "seed", "rounds", "accuracy", "majority", "over majority",
                      "ROC AUC", "seconds"]))
    print(format_row(["---"] * 8))
    for path in paths:
        shipped = load_config(path, args.set)
        try:
            dataset = load_data(shipped, files, args.data_dir)
        except DatasetNotFoundError as err:
            print(f"skipped {path.name}: {str(err).splitlines()[0]}")
            continue
        for seed in args.seeds:
            result = train_and_score(load_config(path, [*args.set, f"seed={seed}"]), dataset,
                                     path.stem)
            results.append(result)
            print(format_row([result.config, seed, result.rounds, f"{result.accuracy:.3f}",
                              f"{result.majority:.3f}", points(result.accuracy - result.majority),
                              f"{result.auc:.3f}", f"{result.seconds:.0f}"]), flush=True)
    if results:
        print()
        print(format_row(["config", "rounds", "seeds", "accuracy mean (min..max)",
                          "ROC AUC mean (min..max)", "majority", "worst seed over majority",
                          "MedMNIST v2 ResNet-18 (28) ACC / AUC", "MedMNIST v2 best ACC / AUC"]))
        print(format_row(["---"] * 9))
        print("\n".join(summary_rows(results)))


if __name__ == "__main__":
    main()
