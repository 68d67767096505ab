"""``privfed keygen`` and ``privfed pin``: the key files a site needs to pin the others' keys.

A site runs ``privfed keygen 3 --out keys/`` once: it writes ``keys/site-3.pem`` (its private
signing key, mode 0600, which never leaves the site) and ``keys/site-3.json`` (its public key).
The sites exchange the ``.json`` files out of band (as they exchange certificates), and each
runs ``privfed pin site-*.json --out network.json``; every SuperNode then starts with
``--node-config "partition-id=3 identity-key='keys/site-3.pem' pinned-keys='network.json'"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from privfed.config import ConfigError
from privfed.secure import ClientIdentity, IdentityRegistry, InvalidInputError
from privfed.secure.validation import check_client_id

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``keygen`` and ``pin`` to the ``privfed`` command line."""
    keygen = commands.add_parser(
        "keygen", help="make a site's Ed25519 signing key and its public key file",
        description="make a site's Ed25519 signing key (PEM, mode 0600) and its public key "
                    "file (JSON) for pinning")
    keygen.add_argument("client_id", type=int, metavar="CLIENT_ID",
                        help="the site's client id (its SuperNode's partition-id)")
    keygen.add_argument("--out", default=".", help="directory to write into (default: .)")
    keygen.set_defaults(handler=_keygen)
    pin = commands.add_parser(
        "pin", help="merge the sites' public key files into one pinned-keys file",
        description="merge public key files (client id -> Ed25519 key) into one file")
    pin.add_argument("files", nargs="+", metavar="FILE", help="public key files (JSON)")
    pin.add_argument("--out", required=True, help="the pinned-keys file to write")
    pin.set_defaults(handler=_pin)


def _keygen(args: argparse.Namespace) -> int:
    try:
        check_client_id(args.client_id)
    except InvalidInputError as err:
        raise ConfigError(f"keygen CLIENT_ID: {err}") from None
    out = Path(args.out)
    private, public = out / f"site-{args.client_id}.pem", out / f"site-{args.client_id}.json"
    for path in (private, public):
        if path.exists():
            raise ConfigError(f"{path} exists; keygen never overwrites a key (move it away)")
    try:
        identity = ClientIdentity(args.client_id)
        out.mkdir(parents=True, exist_ok=True)
        identity.to_file(private)
        IdentityRegistry.from_identities([identity]).to_file(public)
    except (InvalidInputError, OSError) as err:
        raise ConfigError(f"keygen: {err}") from None
    print(f"private key (keep it on this site): {private}\npublic key (share it): {public}")
    return 0


def _pin(args: argparse.Namespace) -> int:
    keys: dict[int, bytes] = {}
    try:
        for name in args.files:
            for client_id, key in IdentityRegistry.from_file(name).keys.items():
                if keys.get(client_id, key) != key:
                    raise ConfigError(f"{name}: client {client_id} has two different keys "
                                      "among the files; pin one")
                keys[client_id] = key
        IdentityRegistry(keys).to_file(args.out)
    except (InvalidInputError, OSError) as err:
        raise ConfigError(f"pin: {err}") from None
    print(f"{len(keys)} pinned keys (clients {sorted(keys)}) written to {args.out}")
    return 0
