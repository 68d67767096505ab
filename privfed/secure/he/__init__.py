"""Additively homomorphic aggregation with TenSEAL CKKS, checked against a lying server.

Trust model, per party
----------------------
All key holders share ONE CKKS secret key. By default the key holders are the clients
themselves (the in-process driver has the included client with the smallest id decode the
round); a key authority can play the role instead (see :class:`HEKeyHolder`).

* **Clients** encrypt ``(w_k / W) * x_k`` (``w_k`` their public weight, ``W`` the announced
  total) under the public context and sign the upload; the signature covers the round, the
  sender, the context fingerprint, ``w_k`` and ``W``. A client that takes the context from
  :meth:`HEPublicContext.from_signed` knows it is the key holder's and not one the server
  made (the server relays it).
* **The server** holds the public context only. It learns each upload's ciphertext (CKKS is
  semantically secure: nothing about the vector), the public weights, who uploaded, and the
  mean once released. It chooses the cohort (it may leave out any upload, and the mean it gets
  names who is in it), but however it lies the key holder decrypts nothing except the sum of
  at least ``max(2, min_clients)`` signed uploads of the current round, each counted once,
  weighted by the weights the clients signed, and at most one cohort per round
  (:meth:`HEKeyHolder.decode` lists each check and what it catches). All of this rests on
  the key holder's and the clients' registry being authentic (pinned keys, see
  :mod:`privfed.secure.identity`): a server that relays substituted keys, or registers
  identities of its own, signs uploads of its own (e.g. encryptions of zero) and so frames
  one honest upload as a sum.
* **The key holder** receives the round's included signed uploads and the aggregate
  ciphertext, recomputes the sum, compares, and releases only the weighted mean. It holds
  the key and the individual uploads, so it *could* decrypt each of them: it must be trusted
  not to look. HE keeps the vectors from the server, not from the key holder. Under
  ``server_model="honest-but-curious"`` it receives the aggregate only (never an individual
  upload) and trusts the server to have framed it honestly.
* **A key holder colluding with the server** breaks everything: the server holds every
  upload and the key decrypts each. Use :mod:`privfed.secure.masking` against that.
* **Clients colluding with the server** (or identities the server registers itself) learn
  the others' sum: in a cohort of ``min_clients`` of which all but one collude, the honest
  client's vector is revealed; ``min_clients`` is the only defence.
* **A malicious client** can upload any vector whose contribution keeps the mean in range:
  the checks bind uploads to their senders, round and context, not to honest training (this
  is not a zero-knowledge proof). An upload under a foreign key decrypts to noise of ~1e7
  per coordinate, which the range check rejects (see :meth:`HEKeyHolder.decode`).

Long vectors are packed into as many ciphertexts of ``poly_modulus_degree / 2`` slots as
needed.

Wire format
-----------
Upload, signed (:func:`~privfed.secure.wire.seal`, kind ``"he"``, stage ``"upload"``):
``pack_fields([fingerprint (16 bytes) | w_k (<f8) | W (<f8), ct_0, ..., ct_{m-1}])``.
Aggregate, from the server: the one-shot header (included ids, included weight, total) and
``[fingerprint, sum_0, ..., sum_{m-1}]``. Signed public context:
:meth:`HEKeyHolder.signed_public_material`. Decrypt request, from the server to the key
holder (kind ``"he"``, stage ``"decrypt"``): ``pack_fields([aggregate, upload_0, ...])``
(:func:`pack_decrypt_request`); the key holder's answer: :func:`~privfed.secure.pack_decoded`.
Key set-up and rounds over any transport: :func:`set_up_he`, :func:`run_he` and the
endpoints of :mod:`privfed.secure.he.endpoints`.
"""

from .aggregator import HEAggregator
from .driver import run_he, set_up_he
from .endpoints import (
    HEKeygenEndpoint,
    HEPublicEndpoint,
    KeyHolderEndpoint,
    open_decrypt_request,
    pack_decrypt_request,
)
from .key_holder import HEKeyHolder
from .material import FINGERPRINT_SIZE, KIND, HEParams, HEPublicContext
from .parties import HEClientParty, HEServerParty

__all__ = [
    "FINGERPRINT_SIZE",
    "KIND",
    "HEAggregator",
    "HEClientParty",
    "HEKeyHolder",
    "HEKeygenEndpoint",
    "HEParams",
    "HEPublicContext",
    "HEPublicEndpoint",
    "HEServerParty",
    "KeyHolderEndpoint",
    "open_decrypt_request",
    "pack_decrypt_request",
    "run_he",
    "set_up_he",
]
