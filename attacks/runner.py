"""The default audit of a configuration: every attack that applies, one leakage dict.

:func:`run_audit` is what ``privfed audit`` calls. It trains a target federation of the
configuration (on a random half of the training data, the other half being the
non-members), attaches the views of the threat model to its round loop, and runs:

* membership inference from the final model (outsider: loss threshold, LiRA and RMIA
  offline and online, RMIA's population samples being the held-out test split) and from
  one client's updates (server view, or collusion view under HE);
* gradient inversion of single-example updates, a multi-step update and the aggregate of
  10 clients, as the server of the configuration receives them;
* a canary audit of epsilon (one run, record level: Steinke, Nasr and Jagielski), and the
  one-run user-level estimate with canary clients (Andrew et al. 2024), each beside the
  theoretical epsilon of the same unit.

How much work each attack does is the config's ``[audit]`` section
(:class:`~privfed.config.AuditConfig`), which the config's hash covers.

The audit is resumable at the grain of its units of work (the target federation with what
its views saw, each reference model, each inversion scenario, the canary audit): each is
saved when it finishes (:mod:`attacks.checkpoints`), and an audit started again after a
kill loads the finished units and computes the rest, with the same result. The output
directory is written beside its place and renamed into it when complete.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks.audit import canary_audit
from attacks.checkpoints import AUDIT_FILES, Checkpoint, CheckpointStore, check_replaceable
from attacks.federation import (
    TrainedFederation,
    client_weights,
    key_holder_secret,
    predict_logits,
)
from attacks.inversion_experiment import inversion_experiment
from attacks.membership import MembershipResult, evaluate_membership, update_alignment_scores
from attacks.membership_experiment import (
    OutsiderSignals,
    draw_membership,
    outsider_attacks,
    reference_confidence,
    train_target,
)
from attacks.oneshot import one_shot_audit
from attacks.plots import ReconstructionRow, plot_reconstructions, plot_roc
from attacks.views import CollusionView, ServerView, UploadReader, applicable_attacks
from privfed import jsonsafe
from privfed.atomic import publish_dir, remove_stale_temporaries, staging_dir
from privfed.clientdata import load_configured_dataset
from privfed.config import ConfigError, ExperimentConfig
from privfed.data import Dataset
from privfed.integrity import DIGEST_FILE, verify_digest, write_digest

__all__ = ["STAGE_MESSAGES", "audit_units", "completed_audit", "run_audit"]

_INVERSION_SCENARIOS = ("single", "multi_step", "aggregate")

STAGE_MESSAGES = ("membership: done", "inversion: done")
"""The progress messages that end a stage of units rather than a unit."""


def audit_units(config: ExperimentConfig) -> int:
    """How many units of work :func:`run_audit` reports for ``config`` (one progress message
    each, besides :data:`STAGE_MESSAGES`): the target, each reference model, each inversion
    scenario, the canary audit and the one-run user-level estimate."""
    return 3 + config.audit.sizes().num_reference + len(_INVERSION_SCENARIOS)


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
        Receives ``leakage.json``, ``roc.png``, ``reconstructions.png``, renamed into place
        complete. Already holding a complete audit of ``config``: nothing is done. Holding
        an audit of another config: replaced when this one is complete.
    progress : callable, optional
        Called with a short message as each unit of work finishes (ending in
        ``"(from checkpoint)"`` for one loaded from a previous, interrupted audit).

    Returns
    -------
    dict
        The leakage report (also in ``leakage.json``): ``config_hash`` (of ``config``, the
        audit's settings included), ``views`` (what applies and why), ``membership``,
        ``inversion``, ``epsilon_audit``, ``seconds`` (of computation) per attack.

    Raises
    ------
    ConfigError
        For a federation of sites' own files (the attacks need a built-in dataset).
    FileExistsError
        When ``out_dir`` holds files that are not an audit's.
    """
    if config.data.is_site_data:
        raise ConfigError(
            f"privfed audit needs a built-in dataset, not data.dataset = "
            f"{config.data.dataset!r}: its attacks pool member and non-member examples and "
            "train reference models on them, which a federation of sites' own files does not "
            "allow (audit the same configuration on a public dataset of the same kind)")
    out = Path(out_dir).absolute()
    say = progress or (lambda _msg: None)
    done = completed_audit(out, config)
    if done is not None:
        say("audit: complete already")
        return done
    check_replaceable(out)
    remove_stale_temporaries(out.parent)
    store = CheckpointStore(out, config.short_hash())
    store.remove_stale()
    report, results, rows = _measure(config, _Units(store, say))
    with staging_dir(out) as staging:
        label = f"{config.name} ({config.short_hash()})"
        plot_roc(results, staging / "roc.png",
                 title=f"{label}:\nmembership ROC, outsider view (the released model)")
        plot_reconstructions(rows, staging / "reconstructions.png",
                             title=f"{label}:\ngradient inversion, each image's PSNR and SSIM")
        # Strict JSON: NaN as null, infinities (e.g. a perfect reconstruction's PSNR, a
        # non-private epsilon) as "inf"; read it back with privfed.jsonsafe.loads.
        (staging / "leakage.json").write_text(jsonsafe.dumps(report, indent=2) + "\n",
                                              encoding="utf-8")
        write_digest(staging, sorted(AUDIT_FILES - {DIGEST_FILE}))
        if completed_audit(out, config) is None:  # else another process finished first
            check_replaceable(out)
            publish_dir(staging, out)
    store.remove()
    return report


def completed_audit(out_dir: str | Path, config: ExperimentConfig) -> dict[str, Any] | None:
    """The report of the complete audit of ``config`` in ``out_dir``, else None.

    Parameters
    ----------
    out_dir : str or Path
        An audit's directory.
    config : ExperimentConfig
        Its ``leakage.json`` must carry this config's hash (audit settings included: a
        quick audit is not taken for a full one).

    Returns
    -------
    dict or None
        ``leakage.json`` as :func:`privfed.jsonsafe.loads` reads it; None also when a
        file differs from the directory's ``SHA256SUMS``
        (:func:`privfed.integrity.verify_digest`).
    """
    if verify_digest(out_dir):
        return None
    try:
        text = (Path(out_dir) / "leakage.json").read_text(encoding="utf-8")
        leakage = jsonsafe.loads(text, keep=("config",))
    except (OSError, ValueError):
        return None
    if not isinstance(leakage, dict) or leakage.get("config_hash") != config.short_hash():
        return None
    return leakage


@dataclass
class _Units:
    """Runs units of work, each loaded from its checkpoint when one was saved."""

    store: CheckpointStore
    say: Callable[[str], None]

    def run(self, unit: str, message: str,
            compute: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
            arrays: tuple[str, ...] = ()) -> Checkpoint:
        """The checkpoint of ``unit``, computed (and saved, with its ``seconds``) if needed.

        ``message`` is reported once the unit is saved or loaded. A saved unit that lacks
        one of ``arrays`` (saved by an older version of the audit) is computed again.
        """
        found = self.store.load(unit)
        if found is not None and set(arrays) <= found.arrays.keys():
            self.say(f"{message} (from checkpoint)")
            return found
        started = time.perf_counter()
        arrays, meta = compute()
        saved = self.store.save(unit, arrays,
                                {**meta, "seconds": time.perf_counter() - started})
        self.say(message)
        return saved


def _measure(
    config: ExperimentConfig, units: _Units
) -> tuple[dict[str, Any], dict[str, MembershipResult], list[ReconstructionRow]]:
    """Every unit of the audit; the report, the outsider attacks' results and the
    reconstructions' rows (for the plots)."""
    sizes = config.audit.sizes()
    data = load_configured_dataset(config)
    report: dict[str, Any] = {
        "config": config.name,
        "config_hash": config.short_hash(),
        "privacy_mechanism": config.privacy.mechanism,
        "secure_aggregation": config.secure.kind,
        "views": applicable_attacks(config),
    }
    members, ref_in = draw_membership(len(data.y_train), sizes.num_reference, config.seed)
    target = units.run("target", "membership: target trained",
                       functools.partial(_target_unit, config, data, members),
                       ("logits", "population_logits"))
    references = [
        units.run(f"reference-{r}",
                  f"membership: reference model {r + 1}/{sizes.num_reference} trained",
                  functools.partial(_reference_unit, config, data, ref_in[r], r),
                  ("confidence", "population_confidence"))
        for r in range(sizes.num_reference)
    ]
    started = time.perf_counter()
    signals = OutsiderSignals(
        target.arrays["logits"], data.y_train,
        np.stack([ref.arrays["confidence"] for ref in references]), ref_in,
        target.arrays["population_logits"], data.y_test,
        np.stack([ref.arrays["population_confidence"] for ref in references]))
    results = outsider_attacks(signals, members)
    outsider_seconds = time.perf_counter() - started + sum(
        ref.meta["seconds"] for ref in references)
    report["membership"] = {
        "outsider": {
            "note": "the released final model; secure aggregation does not change it",
            **{name: res.metrics for name, res in results.items()},
        },
        **target.meta["client_update"],
    }
    units.say(STAGE_MESSAGES[0])
    inversion = _inversion(config, target.meta["noise_multiplier"], units)
    units.say(STAGE_MESSAGES[1])
    canary = units.run("canary", "epsilon audit: done",
                       functools.partial(_canary_unit, config, data))
    one_shot = units.run("one-shot", "user-level estimate: done",
                         functools.partial(_one_shot_unit, config, data))
    report["inversion"] = {name: unit.meta["summary"] for name, unit in inversion.items()}
    report["epsilon_audit"] = canary.meta["summary"]
    report["user_level_estimate"] = one_shot.meta["summary"]
    report["epsilon_theory"] = target.meta["epsilon_theory"]
    client_seconds = target.meta["seconds_client_update"]
    report["seconds"] = {
        "membership_outsider": target.meta["seconds"] - client_seconds + outsider_seconds,
        "membership_client_update": client_seconds,
        "inversion": sum(unit.meta["seconds"] for unit in inversion.values()),
        "epsilon_audit": canary.meta["seconds"],
        "user_level_estimate": one_shot.meta["seconds"],
    }
    rows = [ReconstructionRow(name, unit.meta["summary"]["view"], unit.arrays["originals"],
                              unit.arrays["reconstructions"],
                              unit.meta["summary"].get("per_example", {}).get("psnr", []),
                              unit.meta["summary"].get("per_example", {}).get("ssim", []))
            for name, unit in inversion.items()]
    return report, results, rows


def _target_unit(
    config: ExperimentConfig, data: Dataset, members: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train the target with the views attached; keep its logits on the candidates and on
    RMIA's population (the test split), the client-update membership its views allow, its
    epsilon and its noise multiplier."""
    views: dict[str, ServerView] = {}
    target = train_target(config, data.x_train, data.y_train, members,
                          test=(data.x_test, data.y_test), num_classes=data.num_classes,
                          attach=functools.partial(_attach_views, config, views))
    logits = predict_logits(target, data.x_train)
    population_logits = predict_logits(target, data.x_test)
    started = time.perf_counter()
    client_update = _client_membership(config, target, members, views, data)
    return {"logits": logits, "population_logits": population_logits}, {
        "client_update": client_update,
        "seconds_client_update": time.perf_counter() - started,
        "epsilon_theory": target.epsilon,
        "noise_multiplier": _noise_multiplier(target),
    }


def _attach_views(config: ExperimentConfig, views: dict[str, ServerView],
                  target: TrainedFederation) -> None:
    """Attach the server view (and under HE the collusion view) to the untrained target."""
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


def _reference_unit(
    config: ExperimentConfig, data: Dataset, included: np.ndarray, index: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reference model ``index``'s confidences on the candidates and on RMIA's population
    (the test split)."""
    confidence, population = reference_confidence(
        config, data.x_train, data.y_train, included, test=(data.x_test, data.y_test),
        num_classes=data.num_classes, seed=config.seed, index=index,
        population=(data.x_test, data.y_test))
    return {"confidence": confidence, "population_confidence": population}, {}


def _client_membership(
    config: ExperimentConfig, target: TrainedFederation, members: np.ndarray,
    views: dict[str, ServerView], data: Dataset,
) -> dict[str, Any]:
    """Membership in client 0's data from its updates, under the views that read them."""
    members_x = data.x_train[members][target.partitions[0]]
    members_y = data.y_train[members][target.partitions[0]]
    outsiders = np.flatnonzero(~members)[: len(members_y)]
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
    config: ExperimentConfig, sigma: float | None, units: _Units
) -> dict[str, Checkpoint]:
    """Each inversion scenario as one unit, on the data scaled to [0, 1]."""
    cfg = dataclasses.replace(config, data=dataclasses.replace(config.data, scaling="unit"))
    unit_data = functools.cache(lambda: load_configured_dataset(cfg))
    sizes = config.audit.sizes()
    plan = {
        "single": (sizes.inversion_examples, {}),
        "multi_step": (sizes.inversion_examples, {"steps": sizes.multi_step}),
        "aggregate": (sizes.aggregate_clients, {}),
    }

    def scenario_unit(scenario: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        count, extra = plan[scenario]
        unit = unit_data()
        outcome = inversion_experiment(
            cfg, unit.x_train[:count], unit.y_train[:count], num_classes=unit.num_classes,
            scenario=scenario, noise_multiplier=sigma, seed=config.seed, **extra,
        )
        return ({"originals": outcome.originals, "reconstructions": outcome.reconstructions},
                {"summary": outcome.summary()})

    return {scenario: units.run(f"inversion-{scenario}", f"inversion: {scenario} inverted",
                                functools.partial(scenario_unit, scenario))
            for scenario in _INVERSION_SCENARIOS}


def _canary_unit(
    config: ExperimentConfig, data: Dataset
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The one-run canary audit of epsilon; its summary."""
    # The canaries are scored from the final model (outsider view), which the cryptography
    # does not change: skip it.
    audit = canary_audit(config, data.x_train, data.y_train, test=(data.x_test, data.y_test),
                         num_classes=data.num_classes,
                         num_canaries=config.audit.sizes().num_canaries, seed=config.seed,
                         beta=1 - config.audit.confidence, plain_aggregation=True)
    return {}, {"summary": audit.summary()}


def _one_shot_unit(
    config: ExperimentConfig, data: Dataset
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The one-run user-level estimate (canary clients, final model); its summary, or why
    the federation cannot take the canary clients (e.g. a partition whose minimum client
    size the extra clients break)."""
    try:
        audit = one_shot_audit(config, data.x_train, data.y_train,
                               test=(data.x_test, data.y_test), num_classes=data.num_classes,
                               canaries=config.audit.sizes().one_shot_canaries,
                               seed=config.seed, confidence=config.audit.confidence,
                               plain_aggregation=True)
    except ConfigError as err:
        return {}, {"summary": {"status": "not applicable", "reason": str(err)}}
    return {}, {"summary": {"status": "estimated", **audit.summary()}}


def _noise_multiplier(target: TrainedFederation) -> float | None:
    """The noise the trained target used (its calibrated DP-SGD or DP-FedAvg sigma)."""
    sigma = getattr(target.server.policy, "noise_multiplier", None)
    return None if sigma is None else float(sigma)
