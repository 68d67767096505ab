"""Train a federation of a given configuration on data the attacker chooses.

Reference models (LiRA), audit targets and canary runs must be trained "by the same federated
pipeline" as the configuration under attack, but on chosen example sets. This module calls
:func:`privfed.experiment.build_simulation` with the dataset replaced by explicit arrays, so
every hyperparameter, the privacy mechanism, the secure aggregator and the compression come
from the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privfed.config import ExperimentConfig
from privfed.data import Dataset
from privfed.experiment import build_simulation
from privfed.federated import History, Observer, Server
from privfed.secure import make_aggregator

__all__ = [
    "TrainedFederation",
    "build_federation",
    "client_weights",
    "key_holder_secret",
    "model_logits",
    "predict_logits",
    "train_federation",
]



@dataclass
class TrainedFederation:
    """A federation after training.

    Attributes
    ----------
    server : Server
        The server (its ``workspace`` is the model, ``weights`` the final global model).
    partitions : list of numpy.ndarray
        Indices into the training arrays of each client's examples (before extra data).
    history : History or None
        Round records; None before training.
    """

    server: Server
    partitions: list[np.ndarray]
    history: History | None = None

    @property
    def weights(self) -> torch.Tensor:
        """The final global model, flat."""
        return self.server.weights

    @property
    def epsilon(self) -> float | None:
        """Theoretical epsilon reported by the privacy mechanism after the last round."""
        if not self.history or not self.history.rounds:
            return None
        return self.history.rounds[-1].extra.get("epsilon")

    def client_epsilon(self, client_id: int) -> float | None:
        """The epsilon bounding what inserting records into client ``client_id`` can reveal.

        Local DP: that client's record-level epsilon. User-level DP: the epsilon for
        changing the data of a client that takes part either way (replace-one), not the
        add/remove-one-client headline, which would be too small for this comparison.
        """
        if not self.history or not self.history.rounds:
            return None
        policy = self.server.policy
        if hasattr(policy, "change_one_client_epsilon"):
            return policy.change_one_client_epsilon(client_id)
        extra = self.history.rounds[-1].extra
        per_client = extra.get("epsilon_per_client")
        return per_client[client_id] if per_client is not None else extra.get("epsilon")


def key_holder_secret(server: Server) -> bytes:
    """The CKKS secret key material of an in-process HE ``server``'s key holder (what a
    colluding key-holding client would share)."""
    return server.engine.aggregation.aggregator.key_holder.secret_material()


def client_weights(server: Server) -> dict[int, float]:
    """The public aggregation weight of every client of an in-process ``server`` (what the
    server announces, and a colluding key holder uses to undo the weighting)."""
    return {c.client_id: server.weighting.weight(c.num_samples) for c in server.engine.clients}


def build_federation(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    seed: int | None = None,
    extra: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    observers: Sequence[Observer] = (),
    plain_aggregation: bool = False,
) -> TrainedFederation:
    """Build (not train) the federation of ``config`` on the examples ``x, y``.

    The federation is :func:`privfed.experiment.build_simulation`'s, with the dataset
    replaced by the given arrays and the global model evaluated only after the last round.

    Parameters
    ----------
    config : ExperimentConfig
        Model, partitioning, federation, privacy and secure aggregation settings.
    x, y : numpy.ndarray
        Training examples (float32) and int64 labels, partitioned as the config says.
    test : (numpy.ndarray, numpy.ndarray)
        Evaluation data of the server.
    num_classes : int
    seed : int, optional
        Seed of partition, initialisation, sampling, batch order and noise; default the
        config's seed.
    extra : mapping of int to (x, y), optional
        Examples appended to a client's partition (e.g. canaries).
    observers : sequence of Observer
    plain_aggregation : bool
        Aggregate in the clear instead of with the configured secure aggregation, everything
        else (privacy mechanism included) unchanged. Secure aggregation changes what the
        server reads, not the model it trains (CKKS adds ~1e-9 noise, masking quantises
        finely), so reference models and canary runs scored on the final model may skip it.
    """
    config = dataclasses.replace(
        config,
        seed=config.seed if seed is None else seed,
        federation=dataclasses.replace(config.federation, eval_every=config.federation.rounds),
    )
    dataset = Dataset(
        name="attacker-chosen",
        x_train=np.ascontiguousarray(x, dtype=np.float32),
        y_train=np.ascontiguousarray(y, dtype=np.int64),
        x_test=np.ascontiguousarray(test[0], dtype=np.float32),
        y_test=np.ascontiguousarray(test[1], dtype=np.int64),
        num_classes=num_classes,
    )
    aggregator = make_aggregator("none") if plain_aggregation else None
    simulation = build_simulation(config, observers, dataset=dataset, extra=extra,
                                  aggregator=aggregator)
    return TrainedFederation(simulation.server, [np.asarray(p) for p in simulation.partitions])


def train_federation(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    **kwargs: object,
) -> TrainedFederation:
    """Build the federation with :func:`build_federation` and train it for the config's rounds.

    Returns
    -------
    TrainedFederation
        With its ``history`` set.
    """
    fed = build_federation(config, x, y, **kwargs)  # type: ignore[arg-type]
    fed.history = fed.server.fit(config.federation.rounds)
    return fed


def predict_logits(fed: TrainedFederation, x: np.ndarray) -> np.ndarray:
    """Logits of the final global model on ``x`` (what a white/black-box outsider queries)."""
    return model_logits(fed.server, fed.weights, x)


def model_logits(server: Server, weights: torch.Tensor, x: np.ndarray) -> np.ndarray:
    """Logits of the model ``weights`` (flat) on ``x``, computed in the server's workspace
    (on its device); float64 on the CPU."""
    server.workspace.load(weights)
    module, device = server.workspace.module, server.workspace.device
    module.eval()
    with torch.no_grad():
        inputs = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        return module(inputs).double().cpu().numpy()
