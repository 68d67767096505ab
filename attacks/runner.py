"""The default audit of a configuration: every attack that applies, one leakage dict.

:func:`run_audit` is what ``privfed audit`` calls. It trains a target federation of the
configuration (on a random half of the training data, the other half being the
non-members), attaches the views of the threat model to its round loop, and runs:

* membership inference from the final model (outsider: loss threshold, LiRA offline and
  online) and from one client's updates (server view, or collusion view under HE);
* gradient inversion of single-example updates, a multi-step update and the aggregate of
  10 clients, as the server of the configuration receives them;
* a canary audit of epsilon (one run), beside the theoretical epsilon.

How much work each attack does is the config's ``[audit]`` section
(:class:`~privfed.config.AuditConfig`), which the config's hash covers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attacks.audit import canary_audit
from attacks.federation import TrainedFederation, client_weights, key_holder_secret
from attacks.inversion_experiment import inversion_experiment
from attacks.membership import evaluate_membership, membership_experiment, update_alignment_scores
from attacks.plots import plot_reconstructions, plot_roc
from attacks.views import CollusionView, ServerView, UploadReader, applicable_attacks
from privfed import jsonsafe
from privfed.clientdata import load_configured_dataset
from privfed.config import AuditSizes, ConfigError, ExperimentConfig

__all__ = ["run_audit"]


def run_audit(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure what each party could learn under ``config``; write ``leakage.json`` and plots.

    Parameters
    ----------
    config : ExperimentConfig
        The federation to audit, and in ``config.audit`` the audit's sizes and confidence.
    out_dir : str or Path
        Created if needed; receives ``leakage.json``, ``roc.png``, ``reconstructions.png``.
    progress : callable, optional
        Called with a short message as each step finishes.

    Returns
    -------
    dict
        The leakage report (also in ``leakage.json``): ``config_hash`` (of ``config``, the
        audit's settings included), ``views`` (what applies and why), ``membership``,
        ``inversion``, ``epsilon_audit``, ``seconds`` per attack.

    Raises
    ------
    ConfigError
        For a federation of sites' own files (the attacks need a built-in dataset).
    """
    if config.data.is_site_data:
        raise ConfigError(
            f"privfed audit needs a built-in dataset, not data.dataset = "
            f"{config.data.dataset!r}: its attacks pool member and non-member examples and "
            "train reference models on them, which a federation of sites' own files does not "
            "allow (audit the same configuration on a public dataset of the same kind)")
    sizes = config.audit.sizes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    data = load_configured_dataset(config)
    test = (data.x_test, data.y_test)
    seconds: dict[str, float] = {}
    report: dict[str, Any] = {
        "config": config.name,
        "config_hash": config.short_hash(),
        "privacy_mechanism": config.privacy.mechanism,
        "secure_aggregation": config.secure.kind,
        "views": applicable_attacks(config),
    }

    started = time.perf_counter()
    views: dict[str, ServerView] = {}

    def attach(target: TrainedFederation) -> None:
        server = target.server
        reader = UploadReader.of(server)
        view = ServerView(reader)
        view.attach_initial(server.weights)
        server.observers.append(view)
        views["server"] = view
        if config.secure.kind == "he":
            collusion = CollusionView(key_holder_secret(server), client_weights(server), reader)
            collusion.attach_initial(server.weights)
            server.observers.append(collusion)
            views["collusion"] = collusion

    experiment = membership_experiment(
        config, data.x_train, data.y_train, test=test, num_classes=data.num_classes,
        num_reference=sizes.num_reference, seed=config.seed, attach=attach, progress=say,
    )
    seconds["membership_outsider"] = time.perf_counter() - started
    report["membership"] = {
        "outsider": {
            "note": "the released final model; secure aggregation does not change it",
            **{name: res.metrics for name, res in experiment.results.items()},
        },
    }
    plot_roc(experiment.results, out / "roc.png",
             title=f"{config.name}: membership from the final model")

    started = time.perf_counter()
    report["membership"].update(_client_membership(config, experiment, views, data))
    seconds["membership_client_update"] = time.perf_counter() - started
    say("membership: done")

    started = time.perf_counter()
    report["inversion"], rows = _inversion(config, experiment.target, sizes)
    plot_reconstructions(rows, out / "reconstructions.png")
    seconds["inversion"] = time.perf_counter() - started
    say("inversion: done")

    started = time.perf_counter()
    # The canaries are scored from the final model (outsider view), which the cryptography
    # does not change: skip it.
    audit = canary_audit(config, data.x_train, data.y_train, test=test,
                         num_classes=data.num_classes, num_canaries=sizes.num_canaries,
                         seed=config.seed, beta=1 - config.audit.confidence,
                         plain_aggregation=True)
    report["epsilon_audit"] = audit.summary()
    seconds["epsilon_audit"] = time.perf_counter() - started
    say("epsilon audit: done")

    report["epsilon_theory"] = experiment.target.epsilon
    report["seconds"] = seconds
    # Strict JSON: NaN as null, infinities (e.g. a perfect reconstruction's PSNR, a
    # non-private epsilon) as "inf"; read it back with privfed.jsonsafe.loads.
    (out / "leakage.json").write_text(jsonsafe.dumps(report, indent=2) + "\n",
                                      encoding="utf-8")
    return report


def _client_membership(
    config: ExperimentConfig, experiment: Any, views: dict[str, ServerView], data: Any
) -> dict[str, Any]:
    """Membership in client 0's data from its updates, under the views that read them."""
    target = experiment.target
    members_x = data.x_train[experiment.members][target.partitions[0]]
    members_y = data.y_train[experiment.members][target.partitions[0]]
    outsiders = np.flatnonzero(~experiment.members)[: len(members_y)]
    x = np.concatenate([members_x, data.x_train[outsiders]])
    y = np.concatenate([members_y, data.y_train[outsiders]])
    labels = np.r_[np.ones(len(members_y)), np.zeros(len(outsiders))]
    results: dict[str, Any] = {}
    for name, view in views.items():
        rounds = [r for r in sorted(view.updates) if view.readable_update(r, 0) is not None]
        if not rounds:
            results[name] = {"status": "not applicable",
                             "reason": report_reason(config, name)}
            continue
        scores = sum(
            update_alignment_scores(target.server.workspace, view.models[r - 1],
                                    view.readable_update(r, 0), x, y)
            for r in rounds
        )
        results[name] = {"status": "attacked", "target": "client 0's data",
                         "rounds_observed": len(rounds),
                         **evaluate_membership(
                             labels, scores, attack=f"update alignment ({name} view)").metrics}
    if "collusion" not in results:
        results["collusion"] = {"status": "not applicable",
                                "reason": report_reason(config, "collusion")}
    return {f"{k}_client_update": v for k, v in results.items()}


def report_reason(config: ExperimentConfig, view: str) -> str:
    """The reason :func:`~attacks.views.applicable_attacks` gives for ``view``."""
    return applicable_attacks(config)[view]["reason"]


def _inversion(
    config: ExperimentConfig, target: TrainedFederation, sizes: AuditSizes
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray, np.ndarray]]]:
    cfg = dataclasses.replace(config, data=dataclasses.replace(config.data, scaling="unit"))
    unit = load_configured_dataset(cfg)
    sigma = _noise_multiplier(target)
    n = sizes.inversion_examples
    plan = {
        "single": (n, {}),
        "multi_step": (n, {"steps": sizes.multi_step}),
        "aggregate": (sizes.aggregate_clients, {}),
    }
    summary, rows = {}, []
    for scenario, (count, extra) in plan.items():
        outcome = inversion_experiment(
            cfg, unit.x_train[:count], unit.y_train[:count], num_classes=unit.num_classes,
            scenario=scenario, noise_multiplier=sigma, seed=config.seed, **extra,
        )
        summary[scenario] = outcome.summary()
        rows.append((scenario, outcome.originals, outcome.reconstructions))
    return summary, rows


def _noise_multiplier(target: TrainedFederation) -> float | None:
    """The noise the trained target used (its calibrated DP-SGD or DP-FedAvg sigma)."""
    sigma = getattr(target.server.policy, "noise_multiplier", None)
    return None if sigma is None else float(sigma)
