"""Update compression: codecs and their stages on the update's path from client to server.

A :class:`Codec` turns a client's flat update into a compact payload and back:

* :class:`StochasticQuantizer`: unbiased stochastic rounding to 1, 2, 4 or 8 bits per
  coordinate with a float32 scale per vector or block (QSGD-style),
* :class:`TopK`: the largest-magnitude coordinates (bitmap or integer indices),
* :class:`RandomK`: coordinates drawn from a seed shared by the round's clients.

How they join a federation (:func:`build_compression` returns :class:`CompressionParts`):

* :class:`RandomKStage`, an update stage: the round's shared random-k coordinates travel
  through any aggregation protocol (plain, masking, HE); the server scatters the sum back.
* :class:`CodecPayload`, a payload codec for the plain protocol (``privfed.secure``'s
  ``PayloadCodec``): quantised or top-k uploads, decoded by the server.
* :class:`ErrorFeedbackStage`, an update stage before either: each client keeps what
  compression dropped (its state) and adds it to its next update.

All carry a privacy mechanism's control values (the last ``control_length`` coordinates,
e.g. adaptive clipping's clip bit) exactly. A malformed payload raises
:class:`MalformedPayloadError` (a ``ValueError``). The ``[compression]`` section and its
rules of composition with secure aggregation and DP are in :mod:`privfed.config.compression`.
This package does not import :mod:`privfed.secure`.
"""

from privfed.compression.codec import Codec, MalformedPayloadError
from privfed.compression.factory import CompressionParts, build_compression, make_codec
from privfed.compression.feedback import ErrorFeedbackStage, SentEstimate
from privfed.compression.payload import CodecPayload
from privfed.compression.quantize import BITS, StochasticQuantizer
from privfed.compression.randomk import RandomKStage
from privfed.compression.sparsify import RandomK, TopK

__all__ = [
    "BITS",
    "Codec",
    "CodecPayload",
    "CompressionParts",
    "ErrorFeedbackStage",
    "MalformedPayloadError",
    "RandomK",
    "RandomKStage",
    "SentEstimate",
    "StochasticQuantizer",
    "TopK",
    "build_compression",
    "make_codec",
]
