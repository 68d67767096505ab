"""DP-FTRL (tree, banded) beside DP-FedAvg at equal user-level epsilon, on the digits data.

Run from the repository root: ``python -m experiments.ftrl_vs_fedavg [SETTING ...]``; prints
one Markdown row per (setting, mechanism): final test accuracy, mean and standard deviation
over three seeds, the epsilon reached and the noise multiplier. The settings are named in
:data:`SETTINGS`; each runs on ``experiments/configs/digits.toml`` with its overrides.
"""

from __future__ import annotations

import statistics
import sys

from privfed.config import load_config
from privfed.experiment import build_simulation

CONFIG = "experiments/configs/digits.toml"
EPSILON, CLIP, SEEDS = 8.0, 0.5, (0, 1, 2)

SETTINGS = {
    "every-round": ([], False),  # digits.toml: 10 clients, each every round, 30 rounds
    "cyclic-10x6": (["data.num_clients=100", "federation.fraction=0.1", "federation.rounds=60",
                     "model.hidden=[32]", "federation.local_epochs=5"], True),
    "single-pass": (["data.num_clients=100", "federation.fraction=0.05",
                     "federation.rounds=20", "model.hidden=[32]", "federation.local_epochs=5"],
                    True),
    "mnist-cyclic": (["data.dataset='mnist'", "data.num_clients=100", "federation.fraction=0.1",
                      "federation.rounds=30", "model.hidden=[32]"], True),
}
"""Overrides, and whether clients are sampled (Poisson for DP-FedAvg, the cyclic schedule
for DP-FTRL). every-round: 30 participations per client; cyclic-10x6: 10 of 100 clients per
round, 6 participations each; single-pass: 5 of 100 per round, each client once;
mnist-cyclic: MNIST (the data directory from ``PRIVFED_DATA``) over 100 clients, 10 per
round, 3 participations each."""

MECHANISMS = {
    "none": ["privacy.mechanism='none'"],
    "DP-FedAvg (central; Poisson-sampled and amplified where sampled)": [
        "privacy.mechanism='central'"],
    "DP-FTRL tree": ["privacy.mechanism='ftrl'"],
    "DP-FTRL banded (b = period)": ["privacy.mechanism='ftrl'",
                                    "privacy.factorization='banded'"],
    "DP-FedAvg on the schedule, no amplification (banded b = 1)": [
        "privacy.mechanism='ftrl'", "privacy.factorization='banded'", "privacy.bands=1"],
}


def _fraction(overrides: list[str]) -> float:
    """The ``federation.fraction`` a setting's overrides set."""
    (value,) = [o.split("=", 1)[1] for o in overrides if o.startswith("federation.fraction=")]
    return float(value)


def run(setting: str, mechanism: str) -> str:
    """One Markdown row: the mechanism's accuracy over :data:`SEEDS` in ``setting``."""
    overrides, sampled = SETTINGS[setting]
    schedule = []
    if sampled and "privacy.mechanism='central'" in MECHANISMS[mechanism]:
        schedule = ["federation.client_sampling='poisson'"]
    elif sampled and mechanism != "none":  # the same clients per round, in public groups
        groups = round(1 / _fraction(overrides))
        schedule = ["federation.client_sampling='cyclic'", f"federation.cyclic_groups={groups}",
                    "federation.fraction=1.0"]
    private = [] if mechanism == "none" else [f"privacy.epsilon={EPSILON}",
                                              f"privacy.clip_norm={CLIP}"]
    accuracies, extra = [], {}
    for seed in SEEDS:
        config = load_config(CONFIG, overrides=[*overrides, *MECHANISMS[mechanism],
                                                *schedule, *private, f"seed={seed}"])
        last = build_simulation(config).run().rounds[-1]
        accuracies.append(last.test_accuracy)
        extra = last.extra
    epsilon = extra.get("epsilon")
    z = extra.get("noise_multiplier")
    return (f"| {setting} | {mechanism} | {statistics.mean(accuracies):.3f} ± "
            f"{statistics.stdev(accuracies):.3f} | {'-' if epsilon is None else f'{epsilon:.2f}'}"
            f" | {'-' if z is None else f'{z:.2f}'} |")


if __name__ == "__main__":
    for name in sys.argv[1:] or SETTINGS:
        for mechanism in MECHANISMS:
            if SETTINGS[name][1] or "b = 1" not in mechanism:  # every round: b = 1 = period
                print(run(name, mechanism), flush=True)
