"""Driver of the masking protocol over a transport."""

from __future__ import annotations

from collections.abc import Mapping

from privfed.secure.base import DecodedAggregate, RoundMeter
from privfed.secure.driver import run_stage
from privfed.secure.errors import InvalidInputError
from privfed.secure.payloads import RoundRequest
from privfed.secure.transport import Transport

from .messages import KIND
from .server import MaskingServerParty, decode_masking


def run_masking(
    transport: Transport,
    server: MaskingServerParty,
    weights: Mapping[int, float],
    meter: RoundMeter,
) -> DecodedAggregate:
    """Driver of one masking round (Bonawitz et al. 2017).

    Stages, each sent to the clients still in the round (e.g. their
    :class:`~privfed.secure.MaskingEndpoint`): ``"advertise"`` (a
    :class:`~privfed.secure.RoundRequest`; not counted in ``bytes_down``: it rides with the
    round's broadcast), ``"share"`` (the signed adverts), ``"masked"`` (the shares addressed
    to each), ``"consistency"`` (the survivor set; malicious server model only) and
    ``"unmask"`` (the unmask request). A client that does not answer a stage, or whose
    answer the server rejects, is dropped; the survivors' sum is recovered while at least
    ``t`` clients answer every stage.

    Parameters
    ----------
    transport : Transport
        Reaches the clients.
    server : MaskingServerParty
        The round's server party (at stage ``"advertise"``).
    weights : Mapping[int, float]
        The participants (``server.participants``) and their public weights.
    meter : RoundMeter
        Counts the bytes and the server's time.

    Returns
    -------
    DecodedAggregate
        The weighted mean of the clients whose masked input the server received.

    Raises
    ------
    InvalidInputError
        ``weights`` does not name the server's participants.
    ThresholdError
        Too few clients answered a stage (nothing is unmasked).
    """
    if set(weights) != server.participants:
        raise InvalidInputError(
            f"weights name clients {sorted(weights)}, the server's participants are "
            f"{sorted(server.participants)}"
        )
    round_id, dim = server.round_id, server.dim
    with meter.timed("aggregate"):
        total = sum(weights.values())
        requests = {c: RoundRequest(round_id, w, total, dim).to_bytes(KIND)
                    for c, w in weights.items()}
    alive = run_stage(transport, "advertise", requests, server, meter, count_down=False)
    with meter.timed("aggregate"):
        keys = server.keys_message()
    alive = run_stage(transport, "share", dict.fromkeys(alive, keys), server, meter)
    with meter.timed("aggregate"):
        forward = server.forward_messages()
    alive = run_stage(transport, "masked", forward, server, meter)
    if server.params.consistency_round:
        with meter.timed("aggregate"):
            survivors = server.survivors_message()
        alive = run_stage(transport, "consistency", dict.fromkeys(alive, survivors), server,
                          meter)
    with meter.timed("aggregate"):
        request = server.unmask_request()
    run_stage(transport, "unmask", dict.fromkeys(alive, request), server, meter)
    with meter.timed("aggregate"):
        aggregate = server.aggregate()
    with meter.timed("decode"):
        mean, total_weight, included = decode_masking(aggregate, round_id)
    return DecodedAggregate(mean, total_weight, included)
