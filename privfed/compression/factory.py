"""Build the codec, the stages and the payload codec that a :class:`CompressionConfig` describes."""

from __future__ import annotations

from dataclasses import dataclass

from privfed.compression.codec import Codec
from privfed.compression.control import check_control_length
from privfed.compression.feedback import ErrorFeedbackStage
from privfed.compression.payload import CodecPayload
from privfed.compression.quantize import StochasticQuantizer
from privfed.compression.randomk import RandomKStage
from privfed.compression.sparsify import RandomK, TopK
from privfed.config.compression import CompressionConfig
from privfed.federated.stages import UpdateStage

__all__ = ["CompressionParts", "build_compression", "make_codec"]


def make_codec(config: CompressionConfig, seed: int) -> Codec:
    """The codec of ``config`` (``method`` must not be "none").

    Parameters
    ----------
    config : CompressionConfig
    seed : int
        Shared seed of random-k's index sets.
    """
    if config.method == "quantize":
        return StochasticQuantizer(config.bits, config.block_size)
    if config.method == "topk":
        return TopK(config.density)
    if config.method == "randomk":
        return RandomK(config.density, seed, rescale=config.rescale)
    raise ValueError(f"compression.method {config.method!r} has no codec")


@dataclass(frozen=True)
class CompressionParts:
    """What compression adds to a federation.

    Attributes
    ----------
    stages : tuple of UpdateStage
        Update stages in the order the client applies them, to run after the privacy
        stages' client halves (their server halves run first, in reverse order).
    payload_codec : CodecPayload or None
        Wire payload of the plain protocol (``privfed.secure``'s ``PlainClientParty`` /
        ``PlainServerParty`` / ``PlainAggregator`` ``codec=``); None: float32 (or any protocol).
    """

    stages: tuple[UpdateStage, ...] = ()
    payload_codec: CodecPayload | None = None


def build_compression(
    config: CompressionConfig, *, seed: int, control_length: int = 0
) -> CompressionParts:
    """The stages and payload codec of ``config``.

    * "none": nothing.
    * "quantize", "topk": a :class:`CodecPayload` (plain protocol only; checked by
      :func:`~privfed.config.compression.check_compatible`), preceded with error feedback
      by an :class:`ErrorFeedbackStage` over that payload codec.
    * "randomk": a :class:`RandomKStage`, in front of any protocol; with error feedback,
      ``[ErrorFeedbackStage, RandomKStage]``.

    Parameters
    ----------
    config : CompressionConfig
        Checked beforehand with :func:`~privfed.config.compression.check_compatible`.
    seed : int
        Seed of the clients' stochastic rounding and of random-k's shared index sets
        (derive one from the experiment seed).
    control_length : int, default 0
        The last ``control_length`` coordinates of every client vector are control values
        of the privacy mechanism (e.g. adaptive clipping's clip bit): carried exactly, never
        quantised, sparsified, rescaled or touched by error feedback.

    Raises
    ------
    ValueError
        If ``control_length`` is not an int >= 0.
    """
    control_length = check_control_length(control_length)
    if config.method == "none":
        return CompressionParts()
    codec = make_codec(config, seed)
    if isinstance(codec, RandomK):
        compressor = RandomKStage(codec, control_length=control_length)
        stages: tuple[UpdateStage, ...] = (compressor,)
        payload_codec = None
    else:
        compressor = payload_codec = CodecPayload(codec, seed=seed, control_length=control_length)
        stages = ()
    if config.error_feedback:
        stages = (ErrorFeedbackStage(compressor, control_length=control_length), *stages)
    return CompressionParts(stages, payload_codec)
