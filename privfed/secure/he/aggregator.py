"""The HE protocol in-process."""

from __future__ import annotations

import numpy as np

from privfed.secure.base import DecodedAggregate, RoundMeter
from privfed.secure.errors import InvalidInputError
from privfed.secure.oneshot import UPLOAD_STAGE, OneShotAggregator, OneShotEndpoint
from privfed.secure.transport import ClientEndpoint, StageRouter, Transport
from privfed.secure.wire import SERVER_MODELS

from .driver import run_he
from .endpoints import DECRYPT_STAGE, KeyHolderEndpoint
from .key_holder import HEKeyHolder
from .material import KIND, HEParams, HEPublicContext
from .parties import HEClientParty, HEServerParty


class HEAggregator(OneShotAggregator[HEServerParty]):
    """CKKS secure aggregation; the server only adds ciphertexts.

    Key material is generated once (at construction) and reused across rounds. The clients
    are the key holders: the included client with the smallest id receives the round's
    included uploads and the aggregate in one decrypt request (counted in its ``bytes_down``:
    the included uploads' and the aggregate's sizes plus their framing), checks the aggregate
    against them and decrypts it (see :func:`run_he`).

    Parameters
    ----------
    poly_modulus_degree, coeff_mod_bit_sizes, scale_bits
        See :class:`HEParams`.
    clip : float or None
        Maximum absolute value per coordinate.
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector.
    key_holder : HEKeyHolder, optional
        Existing key material to use instead of generating a new key.
    min_clients : int
        The key holder decrypts only sums of at least this many clients (>= 2).
    server_model : {"malicious", "honest-but-curious"}
        ``"malicious"`` (default): the key holder receives the round's signed uploads and
        decrypts only their verified sum, so a lying server cannot have one client's upload
        decrypted; the key holder then holds every included upload and must be trusted not
        to decrypt them. ``"honest-but-curious"``: the key holder receives the aggregate
        only (it never holds an individual upload) and trusts the server's framing.
    """

    kind = KIND

    def __init__(
        self,
        *,
        poly_modulus_degree: int = 8192,
        coeff_mod_bit_sizes: tuple[int, ...] = (60, 40),
        scale_bits: int = 40,
        clip: float | None = None,
        out_of_range: str = "error",
        key_holder: HEKeyHolder | None = None,
        min_clients: int = 2,
        server_model: str = "malicious",
    ) -> None:
        super().__init__(clip=clip, out_of_range=out_of_range)
        if server_model not in SERVER_MODELS:
            raise InvalidInputError(f"server_model={server_model!r}; allowed: {SERVER_MODELS}")
        self.server_model = server_model
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 2:
            raise InvalidInputError(
                f"min_clients={min_clients!r}; allowed: an int >= 2 (one client's upload is "
                "never decrypted alone)"
            )
        self.min_clients = min_clients
        params = HEParams(poly_modulus_degree, tuple(coeff_mod_bit_sizes), scale_bits)
        self.key_holder = key_holder or HEKeyHolder(params)
        self.public = HEPublicContext(self.key_holder.public_material())
        if self.clip is not None and self.clip > self.public.params.max_abs:
            raise InvalidInputError(
                f"clip={self.clip:g} exceeds the CKKS range limit {self.public.params.max_abs:g}"
            )

    def _client(self, client_id: int) -> HEClientParty:
        return HEClientParty(
            self.identity(client_id), self.public, clip=self.clip, out_of_range=self.out_of_range
        )

    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> HEServerParty:
        return HEServerParty(round_id, weights, self.registry, dim, public=self.public)

    def _endpoints(self, vectors: dict[int, np.ndarray]) -> dict[int, ClientEndpoint]:
        """Each client uploads, and answers ``"decrypt"`` if it is picked as key holder."""
        holder = KeyHolderEndpoint(
            self.key_holder, self.registry, server_model=self.server_model,
            min_clients=self.min_clients, clip=self.clip,
        )
        return {
            c: StageRouter({
                UPLOAD_STAGE: OneShotEndpoint(self._client(c), v), DECRYPT_STAGE: holder,
            })
            for c, v in vectors.items()
        }

    def _drive(
        self, transport: Transport, server: HEServerParty, meter: RoundMeter
    ) -> DecodedAggregate:
        return run_he(transport, server, meter, server_model=self.server_model)
