"""Membership inference: loss threshold (Yeom et al. 2018) and LiRA (Carlini et al. 2022);
RMIA (Zarifzadeh et al. 2024) is in :mod:`attacks.rmia`.

Two targets:

* membership in the federation's training data, from the released final model (outsider
  view): :func:`loss_scores` and :func:`lira_scores` on the model's logits, with reference
  models trained by the same federated pipeline
  (:func:`attacks.membership_experiment.membership_experiment`);
* membership in one client's data, from that client's update (server view, or collusion view
  under HE): :func:`update_alignment_scores`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from scipy.stats import norm
from torch.func import functional_call, grad, vmap

from attacks.metrics import advantage, roc_auc, tpr_at_fpr
from privfed.federated.params import FlatParameters

__all__ = [
    "MembershipResult",
    "evaluate_membership",
    "logit_confidence",
    "loss_scores",
    "lira_scores",
    "update_alignment_scores",
]


@dataclass
class MembershipResult:
    """ROC summary of one membership attack.

    Attributes
    ----------
    labels, scores : numpy.ndarray
        Ground truth (1 = member) and attack scores (higher = member).
    attack : str
        Name of the attack, for error messages (e.g. NaN scores).
    extra : dict
        Settings of the attack to report beside its metrics (e.g. RMIA's ``offline_a``).
    metrics : dict
        AUC, TPR at 0.1% and 1% FPR, advantage, the class sizes, then ``extra``.
    """

    labels: np.ndarray
    scores: np.ndarray
    attack: str = "membership attack"
    extra: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        name = self.attack
        self.metrics = {
            "auc": roc_auc(self.labels, self.scores, attack=name),
            "tpr_at_0.1%_fpr": tpr_at_fpr(self.labels, self.scores, 0.001, attack=name),
            "tpr_at_1%_fpr": tpr_at_fpr(self.labels, self.scores, 0.01, attack=name),
            "advantage": advantage(self.labels, self.scores, attack=name),
            "members": int(np.sum(self.labels)),
            "non_members": int(np.sum(1 - np.asarray(self.labels))),
            **self.extra,
        }


def evaluate_membership(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    attack: str = "membership attack",
    extra: dict[str, float] | None = None,
) -> MembershipResult:
    """Wrap labels and scores into a :class:`MembershipResult` (computes the metrics).

    Parameters
    ----------
    labels, scores : numpy.ndarray
        Ground truth (1 = member) and attack scores (higher = member).
    attack : str
        Name of the attack that produced ``scores``; a NaN score raises a ValueError that
        names it.
    extra : dict, optional
        Settings of the attack, reported in the result's metrics.

    Returns
    -------
    MembershipResult
    """
    return MembershipResult(np.asarray(labels, dtype=np.int64), np.asarray(scores, np.float64),
                            attack, dict(extra or {}))


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Carlini et al.'s logit-scaled confidence ``log(p_y / (1 - p_y))``, computed stably."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    correct = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    return correct - logsumexp(others, axis=1)


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Yeom et al.'s attack score: minus the cross-entropy loss (low loss = member)."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits[np.arange(len(labels)), labels] - logsumexp(logits, axis=1)


def lira_scores(
    target: np.ndarray, reference: np.ndarray, reference_in: np.ndarray, *, online: bool
) -> np.ndarray:
    """LiRA's per-example likelihood-ratio scores.

    Parameters
    ----------
    target : numpy.ndarray
        ``(N,)`` logit-scaled confidences of the target model on the candidates.
    reference : numpy.ndarray
        ``(R, N)`` the same for R reference models.
    reference_in : numpy.ndarray
        ``(R, N)`` bool, whether the candidate was in the reference model's training data.
    online : bool
        Online: Gaussian likelihood ratio of IN vs OUT fits. Offline: only OUT models; the
        score is the one-sided statistic ``(c - mu_out) / sigma_out``.

    Returns
    -------
    numpy.ndarray
        Higher means more likely a member. Means are per example, variances global (pooled
        over examples), Carlini et al.'s recommendation for few reference models.
    """
    reference_in = np.asarray(reference_in, dtype=bool)
    out = ~reference_in
    if np.any(out.sum(axis=0) == 0) or (online and np.any(reference_in.sum(axis=0) == 0)):
        raise ValueError("every candidate needs OUT (and, online, IN) reference models")
    mu_out, sd_out = _masked_fit(reference, out)
    if not online:
        return (target - mu_out) / sd_out
    mu_in, sd_in = _masked_fit(reference, reference_in)
    return norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)


def _masked_fit(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    counts = mask.sum(axis=0)
    mean = np.where(mask, values, 0.0).sum(axis=0) / counts
    resid = np.where(mask, values - mean, 0.0)
    dof = max(int(mask.sum()) - values.shape[1], 1)
    return mean, max(math.sqrt(float((resid**2).sum()) / dof), 1e-6)


def update_alignment_scores(
    workspace: FlatParameters,
    global_weights: torch.Tensor,
    update: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
) -> np.ndarray:
    """Server-view membership scores: cosine of each candidate's descent direction with an update.

    A client's update is a sum of ``-lr * gradient`` steps over its own examples, so a member's
    negative loss gradient at the round's global model points along it.

    Parameters
    ----------
    workspace : FlatParameters
        The model architecture (its weights are overwritten).
    global_weights : torch.Tensor
        The global model the round started from (flat).
    update : numpy.ndarray
        The client's update as the view decoded it.
    x, y : numpy.ndarray
        Candidate examples and labels.
    """
    grads = per_example_gradients(workspace, global_weights, x, y)
    u = torch.as_tensor(update, dtype=torch.float32)
    return F.cosine_similarity(-grads, u.unsqueeze(0), dim=1).double().numpy()


def per_example_gradients(
    workspace: FlatParameters, weights: torch.Tensor, x: np.ndarray, y: np.ndarray
) -> torch.Tensor:
    """``(N, P)`` flat loss gradients of each example at the flat ``weights``, computed on
    the workspace's device; a float32 CPU tensor."""
    module, spec, device = workspace.module, workspace.spec, workspace.device
    flat = weights.detach().to(device, copy=True)
    params = {k: v.detach() for k, v in spec.unflatten(flat).items()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(module, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    xt = torch.as_tensor(np.asarray(x, np.float32)).to(device)
    yt = torch.as_tensor(np.asarray(y, np.int64)).to(device)
    parts = []
    for start in range(0, len(xt), 256):
        g = vmap(grad(loss), in_dims=(None, 0, 0))(params, xt[start:start + 256],
                                                   yt[start:start + 256])
        parts.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in spec.names], dim=1))
    return torch.cat(parts).cpu()
