"""Build the codec and the compressing aggregator that a :class:`CompressionConfig` describes."""

from __future__ import annotations

from typing import Any

from privfed.compression.aggregator import CompressedAggregator
from privfed.compression.codec import Codec
from privfed.compression.control import check_control_length
from privfed.compression.quantize import StochasticQuantizer
from privfed.compression.settings import CompressionConfig
from privfed.compression.shared import SharedIndexAggregator
from privfed.compression.sparsify import RandomK, TopK

__all__ = ["make_codec", "compress_aggregator"]


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


def compress_aggregator(
    config: CompressionConfig,
    inner: Any,
    *,
    secure_kind: str,
    seed: int,
    control_length: int = 0,
) -> Any:
    """Wrap or replace the configured aggregator so that updates travel compressed.

    Parameters
    ----------
    config : CompressionConfig
        Checked beforehand with :func:`~privfed.compression.settings.check_compatible`.
    inner : aggregator
        The aggregator built from ``[secure]``.
    secure_kind : str
        ``secure.kind`` of ``inner``.
    seed : int
        Seed of the clients' stochastic rounding and of random-k's shared index sets
        (derive one from the experiment seed).
    control_length : int, default 0
        The last ``control_length`` coordinates of every client vector are control values
        of the privacy mechanism (``transformed_length(n) - n``, e.g. adaptive clipping's
        clip bit): carried exactly, never quantised, sparsified, rescaled or touched by
        error feedback; the codec compresses the other coordinates.

    Returns
    -------
    aggregator
        ``inner`` itself for method "none"; a :class:`CompressedAggregator` (with ``inner``'s
        clip settings) for secure kind "none"; a :class:`SharedIndexAggregator` around
        ``inner`` for "randomk" with another secure kind.

    Raises
    ------
    ValueError
        If ``control_length`` is not an int >= 0 (:class:`privfed.secure.InvalidInputError`),
        or the method is not supported with ``secure_kind``.
    """
    control_length = check_control_length(control_length)
    if config.method == "none":
        return inner
    codec = make_codec(config, seed)
    if secure_kind == "none":
        return CompressedAggregator(
            codec, error_feedback=config.error_feedback, seed=seed, clip=inner.clip,
            out_of_range=inner.out_of_range, control_length=control_length,
        )
    if isinstance(codec, RandomK):
        return SharedIndexAggregator(inner, codec, error_feedback=config.error_feedback,
                                     control_length=control_length)
    raise ValueError(
        f"compression.method {config.method!r} is not supported with secure.kind "
        f"{secure_kind!r}; see privfed.compression.check_compatible"
    )
