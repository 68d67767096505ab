"""Gradient inversion against what the server of a configuration actually receives.

Each scenario is a real one-round federation built from the configuration (its privacy
mechanism and secure aggregator included) whose clients hold one example each and train with
batch size 1, i.e. the FedSGD worst case. A :class:`~attacks.views.ServerView` (or, under HE,
a :class:`~attacks.views.CollusionView`) records the round, and the attack inverts what that
view decodes:

* "single": one client's update (one SGD step: the gradient of one example);
* "multi_step": one client's update after ``steps`` local SGD steps on its example (known
  learning rate), inverted as their average gradient;
* "aggregate": the decoded mean of ``aggregate_clients`` clients' updates, inverted as if it
  were one example's gradient (scored against the best-matching original).

Besides each reconstruction's MSE, PSNR and SSIM against the example it was inverted from,
the scenario's reconstructions are paired with its examples by the optimal one-to-one
assignment on MSE (:func:`~attacks.metrics.match_reconstructions`) and the matched pairs
scored, so a permuted or partial reconstruction is not scored by its order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from attacks.federation import build_federation, client_weights, key_holder_secret
from attacks.inversion import gradient_from_update, invert
from attacks.metrics import match_reconstructions, mse, psnr, ssim
from attacks.views import CollusionView, ServerView, UploadReader
from privfed.config import ExperimentConfig

__all__ = ["InversionOutcome", "inversion_experiment", "fedsgd_config"]


@dataclass
class InversionOutcome:
    """Reconstructions of one scenario and their quality.

    Attributes
    ----------
    scenario, view : str
    originals, reconstructions : numpy.ndarray
        Images in [0, 1] (empty when the view could not read the update).
    labels, recovered_labels : numpy.ndarray
    per_example : dict of str to list of float
        "mse", "psnr", "ssim", "label_correct" of each reconstruction against its original;
        "matched_psnr", "matched_ssim" of each pair of the optimal matching.
    reason : str or None
        Why nothing was attacked (an opaque update), else None.
    """

    scenario: str
    view: str
    originals: np.ndarray
    reconstructions: np.ndarray
    labels: np.ndarray
    recovered_labels: np.ndarray
    per_example: dict[str, list[float]]
    reason: str | None = None

    def summary(self) -> dict[str, object]:
        """Mean metrics (PSNR capped at 100 dB before averaging), or the reason the view
        reveals nothing."""
        if self.reason is not None:
            return {"status": "not applicable", "reason": self.reason, "view": self.view}
        mean = {k: float(np.mean(np.minimum(v, 100.0))) for k, v in self.per_example.items()}
        return {
            "status": "attacked",
            "view": self.view,
            "examples": len(self.originals),
            "mean_mse": mean["mse"],
            "mean_psnr_db": mean["psnr"],
            "mean_ssim": mean["ssim"],
            "mean_matched_psnr_db": mean["matched_psnr"],
            "mean_matched_ssim": mean["matched_ssim"],
            "label_accuracy": mean["label_correct"],
            "per_example": {k: [float(x) for x in v] for k, v in self.per_example.items()},
        }


def fedsgd_config(
    config: ExperimentConfig, num_clients: int, steps: int = 1,
    noise_multiplier: float | None = None,
) -> ExperimentConfig:
    """``config`` reduced to one round of ``num_clients`` one-example clients, batch size 1.

    With ``noise_multiplier`` the privacy mechanism keeps its kind but uses that noise
    (e.g. the noise the full run calibrated for its epsilon) instead of re-calibrating for
    one round.
    """
    privacy = config.privacy
    if noise_multiplier is not None and privacy.mechanism != "none":
        privacy = dataclasses.replace(privacy, noise_multiplier=noise_multiplier, epsilon=None)
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, num_clients=num_clients, partition="iid",
                                 samples_per_client=None),
        federation=dataclasses.replace(config.federation, rounds=1, fraction=1.0,
                                       local_epochs=steps, batch_size=1),
        privacy=privacy,
    )


def inversion_experiment(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    scenario: str = "single",
    steps: int = 2,
    method: str = "dlg",
    iterations: int | None = None,
    noise_multiplier: float | None = None,
    seed: int = 0,
) -> InversionOutcome:
    """Run one scenario on the examples ``x, y`` (images scaled to [0, 1]).

    Parameters
    ----------
    config : ExperimentConfig
        The configuration under attack (model, lr, privacy, secure aggregation).
    x, y : numpy.ndarray
        "single"/"multi_step": one client per example; "aggregate": all of them are the
        clients of one round.
    num_classes : int
    scenario : {"single", "multi_step", "aggregate"}
    steps : int
        Local SGD steps of "multi_step".
    method : {"dlg", "geiping"}
    iterations : int, optional
        Optimiser iterations (default of the method).
    noise_multiplier : float, optional
        See :func:`fedsgd_config`.
    seed : int
    """
    if scenario not in ("single", "multi_step", "aggregate"):
        raise ValueError(f"unknown scenario {scenario!r}")
    n = len(y)
    local_steps = steps if scenario == "multi_step" else 1
    cfg = fedsgd_config(config, n, local_steps, noise_multiplier)
    fed = build_federation(cfg, x, y, test=(x, y), num_classes=num_classes, seed=seed)
    server = fed.server
    if config.secure.kind == "he":
        view: ServerView = CollusionView(key_holder_secret(server), client_weights(server),
                                         UploadReader.of(server))
        view_name = "collusion"
    else:
        view, view_name = ServerView(UploadReader.of(server)), "server"
    view.attach_initial(server.weights)
    server.observers.append(view)
    server.fit(1)
    weights = view.models[0]
    order = np.concatenate(fed.partitions)  # client k holds example order[k]
    originals, labels = x[order], y[order]
    if scenario == "aggregate":
        view_name = "server"  # the decoded aggregate is what every view gets
        observed = [view.aggregates[1]]
    else:
        observed = [view.readable_update(1, client_id) for client_id in range(n)]
        if any(u is None for u in observed):
            return InversionOutcome(
                scenario, view_name, originals[:0], originals[:0], labels[:0], labels[:0], {},
                reason=f"opaque: the {view_name} view cannot read one client's update under "
                f"secure.kind={config.secure.kind!r}",
            )
    recs = [
        invert(server.workspace,
               weights, gradient_from_update(u, cfg.federation.lr, local_steps),
               tuple(x.shape[1:]), method=method, iterations=iterations, seed=seed + i)
        for i, u in enumerate(observed)
    ]
    rec_x = np.clip(np.stack([r.x for r in recs]), 0.0, 1.0)
    rec_y = np.array([r.label for r in recs])
    matched = match_reconstructions(_as_images(originals), _as_images(rec_x))
    if scenario == "aggregate":  # score the one reconstruction against its best match
        originals, labels = originals[matched.original], labels[matched.original]
    images = _as_images(originals), _as_images(rec_x)
    per_example = {
        "mse": mse(*images).tolist(),
        "psnr": psnr(*images).tolist(),
        "ssim": ssim(*images).tolist(),
        "label_correct": (rec_y == labels).astype(float).tolist(),
        "matched_psnr": matched.psnr.tolist(),
        "matched_ssim": matched.ssim.tolist(),
    }
    return InversionOutcome(scenario, view_name, images[0], images[1], labels, rec_y,
                            per_example)


def _as_images(x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)``: flat feature vectors become one-row single-channel images."""
    return x if x.ndim == 4 else x.reshape(len(x), 1, 1, -1)
