"""Threat-model views: observers that record exactly what one party sees of a run.

* :class:`ServerView`: the honest-but-curious server. It keeps every message as received and
  decodes what its bytes reveal: a plain run's float32 updates; nothing of a CKKS ciphertext
  (the server holds only the public context) or of a masked vector. It also sees each round's
  decoded aggregate.
* :class:`CollusionView`: the server plus one HE key-holding client, who shares the CKKS
  secret key: it decrypts every client's captured upload bytes with TenSEAL.
* :class:`OutsiderView`: anyone after training, holding only the released final model.

:func:`applicable_attacks` states, per view, what an attack can use under a configuration,
so that a view that reveals nothing is reported as such rather than attacked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import tenseal as ts
import torch

from privfed.config import ExperimentConfig
from privfed.federated import Observer, Pipeline, Server
from privfed.federated.engine import evaluation_stage
from privfed.federated.params import ParamSpec
from privfed.secure.identity import SIGNATURE_SIZE
from privfed.secure.wire import unpack, unpack_fields

__all__ = [
    "OPAQUE",
    "UploadReader",
    "ServerView",
    "CollusionView",
    "OutsiderView",
    "applicable_attacks",
]

OPAQUE = None
"""What a view records for an update whose bytes reveal nothing to it."""


class UploadReader:
    """How the server reads one client's plain upload back into a model-length update.

    The server runs the plain protocol's payload codec (if any) and knows every stage's
    public shape (e.g. the round's random-k index set), so it reads an upload exactly as it
    would aggregate it: :meth:`privfed.federated.Pipeline.reconstruct` on the decoded vector.

    Parameters
    ----------
    pipeline : Pipeline, optional
        The run's update pipeline (default: none).
    codec : PayloadCodec, optional
        The plain protocol's payload codec (default: float32 payloads).
    """

    def __init__(self, pipeline: Pipeline | None = None, codec=None) -> None:
        self.pipeline = pipeline or Pipeline()
        self.codec = codec

    @classmethod
    def of(cls, server: Server) -> UploadReader:
        """The reader of ``server``'s pipeline and plain payload codec."""
        aggregation = getattr(server.engine, "aggregation", None)
        aggregator = getattr(aggregation, "aggregator", None)
        return cls(server.pipeline, getattr(aggregator, "codec", None))

    def decode(self, round_id: int, payload: bytes, length: int) -> np.ndarray:
        """A plain upload's payload (a vector of the pipeline's ``length``) as an update."""
        if self.codec is None:
            vector = np.frombuffer(payload, dtype="<f4")
        else:
            vector = self.codec.decode(payload, length, round_id)
        return self.reconstruct(round_id, vector)

    def reconstruct(self, round_id: int, vector: np.ndarray) -> np.ndarray:
        """One client's protocol input read back as a float64 model-length update."""
        tensor = torch.from_numpy(np.asarray(vector, dtype=np.float32).copy())
        return self.pipeline.reconstruct(round_id, tensor).double().numpy()


class ServerView(Observer):
    """What the server sees: raw messages, the updates it can decode, the aggregates.

    Attributes
    ----------
    messages : dict
        ``messages[round][client_id]`` is a list of ``(stage, bytes)`` as received.
    updates : dict
        ``updates[round][client_id]`` is the client's update as a float64 vector where its upload
        is readable (plain aggregation), else :data:`OPAQUE` (None).
    aggregates : dict
        ``aggregates[round]`` is the decoded weighted mean of the round's updates.
    undecoded_kinds : set of str
        Upload kinds this view recorded as None without a decoder for them: None there
        means "not decoded", not "reveals nothing".

    Parameters
    ----------
    reader : UploadReader, optional
        How the server reads a plain upload (its payload codec and the stages' shapes,
        e.g. random-k's index set; :meth:`UploadReader.of` a server); default float32
        payloads read as they are.
    models : dict
        ``models[round]`` is the global model released at the end of ``round`` (flat); round
        0 is the initial model, recorded at the first ``round_started``.
    """

    def __init__(self, reader: UploadReader | None = None) -> None:
        self.reader = reader or UploadReader()
        self.messages: dict[int, dict[int, list[tuple[str, bytes]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.updates: dict[int, dict[int, np.ndarray | None]] = defaultdict(dict)
        self.aggregates: dict[int, np.ndarray] = {}
        self.models: dict[int, torch.Tensor] = {}
        self.cohorts: dict[int, list[int]] = {}
        self.spec: ParamSpec | None = None
        self.undecoded_kinds: set[str] = set()

    def attach_initial(self, weights: torch.Tensor) -> None:
        """Record the initial global model (the server chose it, so it knows it)."""
        self.models[0] = weights.detach().clone()

    def round_started(self, round_id: int, client_ids: Sequence[int]) -> None:
        """Remember the round's cohort."""
        self.cohorts[round_id] = list(client_ids)

    def server_received(self, round_id: int, client_id: int, stage: str, message: bytes) -> None:
        """Keep the bytes; decode an upload where the server can. Federated evaluation's
        messages (its counts, not an update) are kept and not decoded."""
        self.messages[round_id][client_id].append((stage, bytes(message)))
        if stage.startswith(evaluation_stage()):
            return
        envelope = unpack(message)
        if envelope.stage == "upload":
            self.updates[round_id][client_id] = self._decode_upload(
                round_id, client_id, envelope.kind, bytes(message))
        elif envelope.stage == "masked":
            self.updates[round_id][client_id] = OPAQUE

    def aggregate_released(self, round_id: int, mean_update: torch.Tensor) -> None:
        """Keep the decoded aggregate (as float64)."""
        self.aggregates[round_id] = mean_update.double().numpy()

    def model_released(self, round_id: int, weights: torch.Tensor, spec: ParamSpec) -> None:
        """Keep the new global model."""
        self.models[round_id] = weights.detach().clone()
        self.spec = spec

    def readable_update(self, round_id: int, client_id: int) -> np.ndarray | None:
        """The update of ``client_id`` in ``round_id`` if this view can read it, else None."""
        return self.updates.get(round_id, {}).get(client_id)

    def _decode_upload(self, round_id: int, client_id: int, kind: str,
                       message: bytes) -> np.ndarray | None:
        if kind == "none" and 0 in self.models:  # Plain: the server reads the payload.
            length = self.reader.pipeline.output_length(self.models[0].numel())
            return self.reader.decode(round_id, unpack(message).payload, length)
        if kind != "he":  # An encoding this view has no decoder for: say so, never guess.
            self.undecoded_kinds.add(kind)
        return OPAQUE  # A CKKS ciphertext under a key the server does not hold.


class CollusionView(ServerView):
    """The server colluding with one HE key holder: decrypts every client's upload.

    Parameters
    ----------
    secret_material : bytes
        The colluding client's key material, e.g.
        ``server.aggregator.key_holder.secret_material()``.
    client_weights : mapping of int to float
        The public FedAvg weights ``n_k`` of the clients (the server announces the total
        ``W`` so that each client encrypts ``(n_k / W) * update``); used to undo the weighting.
    """

    def __init__(self, secret_material: bytes, client_weights: Mapping[int, float],
                 reader: UploadReader | None = None) -> None:
        super().__init__(reader)
        head_bits_context = unpack_fields(secret_material, 3)
        self._context = ts.context_from(head_bits_context[2])
        if not self._context.has_secret_key():
            raise ValueError("secret_material holds no secret key")
        self._weights = dict(client_weights)

    def _decode_upload(self, round_id: int, client_id: int, kind: str,
                       message: bytes) -> np.ndarray | None:
        if kind != "he":
            return super()._decode_upload(round_id, client_id, kind, message)
        body = message[:-SIGNATURE_SIZE]  # HE uploads are signed; drop the signature.
        fields = unpack_fields(unpack(body).payload)
        parts = [ts.ckks_vector_from(self._context, ct).decrypt() for ct in fields[1:]]
        weighted = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
        total = sum(self._weights[c] for c in self.cohorts[round_id])
        return self.reader.reconstruct(round_id, weighted * (total / self._weights[client_id]))


class OutsiderView(Observer):
    """An outsider: sees only the model released after the last round.

    Parameters
    ----------
    last_round : int
        The round whose released model is the final one.
    """

    def __init__(self, last_round: int) -> None:
        self.last_round = last_round
        self.final_model: torch.Tensor | None = None

    def model_released(self, round_id: int, weights: torch.Tensor, spec: ParamSpec) -> None:
        """Keep the model if it is the final release."""
        if round_id == self.last_round:
            self.final_model = weights.detach().clone()


def applicable_attacks(config: ExperimentConfig) -> dict[str, dict[str, str]]:
    """Which attack inputs each view has under ``config``, with the reason.

    Returns
    -------
    dict
        ``{view: {"status": "applicable" | "not applicable", "reason": str}}`` for the views
        "server", "collusion" and "outsider".
    """
    kind, mechanism = config.secure.kind, config.privacy.mechanism
    noise = {
        "none": "",
        "local": " (each update is the result of DP-SGD: clipped, noised per-example gradients)",
        "central": " (updates are clipped; the noise is added to the aggregate only)",
        "distributed": " (each update is clipped and carries its share of the noise)",
    }[mechanism]
    if kind == "none":
        server = ("applicable", "plain aggregation: every client's update is readable" + noise)
    elif kind == "he":
        server = ("not applicable", "opaque: uploads are CKKS ciphertexts and the server holds "
                  "no secret key; only the aggregate is decodable")
    else:
        server = ("not applicable", "opaque: uploads are uniformly masked ring elements; only "
                  "the aggregate is decodable")
    if kind == "he":
        collusion = ("applicable", "one key-holding client shares the CKKS secret key: the "
                     "server decrypts every client's upload" + noise)
    elif kind == "none":
        collusion = ("not applicable", "nothing to gain: the server already reads every update")
    else:
        collusion = ("not applicable", "one colluding client learns only its own mask "
                     "shares; the other clients' updates stay masked")
    outsider = ("applicable", "the released final model (white box: weights; black box: its "
                "outputs); secure aggregation does not protect it" +
                (", DP does" if mechanism != "none" else ""))
    return {
        view: {"status": status, "reason": reason}
        for view, (status, reason) in
        {"server": server, "collusion": collusion, "outsider": outsider}.items()
    }
