"""Update compression: codecs on the update's path from client to server.

A :class:`Codec` turns a client's flat update into a compact payload and back:

* :class:`StochasticQuantizer`: unbiased stochastic rounding to 1, 2, 4 or 8 bits per
  coordinate with a float32 scale per vector or block (QSGD-style),
* :class:`TopK`: the largest-magnitude coordinates (bitmap or integer indices),
* :class:`RandomK`: coordinates drawn from a seed shared by the round's clients.

:class:`CompressedAggregator` runs them in place of the plain aggregator (bytes on the wire
are the serialised compressed messages), optionally with :class:`ErrorFeedback`;
:class:`SharedIndexAggregator` puts random-k in front of any aggregator, masking included.
Both carry a privacy mechanism's control values (the last ``control_length`` coordinates,
e.g. adaptive clipping's clip bit) exactly, outside the codec.
:class:`CompressionConfig` is the ``[compression]`` section; :func:`check_compatible`
enforces the rules of composition with secure aggregation and DP.
"""

from privfed.compression.aggregator import (
    CompressedAggregator,
    CompressedServer,
    CompressingClient,
)
from privfed.compression.codec import Codec
from privfed.compression.factory import compress_aggregator, make_codec
from privfed.compression.feedback import ErrorFeedback
from privfed.compression.quantize import BITS, StochasticQuantizer
from privfed.compression.settings import METHODS, CompressionConfig, check_compatible
from privfed.compression.shared import SharedIndexAggregator
from privfed.compression.sparsify import RandomK, TopK

__all__ = [
    "BITS",
    "METHODS",
    "Codec",
    "CompressedAggregator",
    "CompressedServer",
    "CompressingClient",
    "CompressionConfig",
    "ErrorFeedback",
    "RandomK",
    "SharedIndexAggregator",
    "StochasticQuantizer",
    "TopK",
    "check_compatible",
    "compress_aggregator",
    "make_codec",
]
