"""Payload encryption (docs/payload-encryption.md): AES-256-GCM under named keys, so the Temporal
cluster stores ciphertext and keys can be rotated without losing running checkouts.

An encrypted payload has the metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <id>``; its data is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``,
the ciphertext being the serialized original ``temporal.api.common.v1.Payload`` (metadata and
data, so the original encoding comes back too) and the key id, UTF-8, the associated data: a
payload relabelled with another key id fails authentication. docs/payload-encryption.md says the
same for operators.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
ENCODING_KEY = "encoding"
KEY_ID_KEY = "encryption-key-id"
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32

#: Key ids are written into every payload's metadata and shown in errors: short and plain.
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """``CHECKOUT_PAYLOAD_KEYS`` cannot be used. The message never holds key material."""


class PayloadDecryptionError(Exception):
    """An encrypted payload cannot be read: its key is not configured, or it was altered."""


@dataclass(frozen=True)
class PayloadKey:
    """One named AES-256 key. ``repr`` leaves the key out, so it never lands in a log."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.key_id):
            raise PayloadKeyError(
                f"key id {self.key_id!r}: use 1-64 of A-Z a-z 0-9 . _ - (it is stored in every"
                " payload's metadata)"
            )
        if len(self.key) != KEY_SIZE:
            raise PayloadKeyError(
                f"key {self.key_id}: must be {KEY_SIZE} bytes (AES-256), got {len(self.key)}"
            )


def parse_payload_keys(text: str) -> tuple[PayloadKey, ...]:
    """``"k2:<base64>,k1:<base64>"`` as keys, first (the one that encrypts) first."""
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise PayloadKeyError("no keys given; expected id:<base64 of 32 bytes>, comma-separated")
    keys: list[PayloadKey] = []
    for position, entry in enumerate(entries, start=1):
        key_id, colon, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not colon or not key_id:
            # The entry may be a bare key: name its position, never its text.
            raise PayloadKeyError(f"entry {position}: expected id:<base64 of 32 bytes>")
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise PayloadKeyError(f"key {key_id}: not valid base64") from None
        if any(key.key_id == key_id for key in keys):
            raise PayloadKeyError(f"key id {key_id} appears more than once")
        keys.append(PayloadKey(key_id, raw))
    return tuple(keys)


def format_payload_keys(keys: Sequence[PayloadKey]) -> str:
    """The ``CHECKOUT_PAYLOAD_KEYS`` value for ``keys`` (tests and key generation)."""
    return ",".join(f"{k.key_id}:{base64.b64encode(k.key).decode()}" for k in keys)


def describe_payload_keys(keys: Sequence[PayloadKey]) -> str:
    """How payloads are written, for a start-up log line: key ids only."""
    if not keys:
        return "payloads are plain JSON (CHECKOUT_PAYLOAD_KEYS is not set)"
    also = f", also reading {', '.join(k.key_id for k in keys[1:])}" if len(keys) > 1 else ""
    return f"payloads are encrypted under key {keys[0].key_id}{also}"


def generate_key(key_id: str) -> PayloadKey:
    return PayloadKey(key_id, AESGCM.generate_key(bit_length=KEY_SIZE * 8))


class EncryptionCodec(PayloadCodec):
    """Encrypts under the first key; decrypts under any; lets unencrypted payloads through,
    so a backend without this codec can still start a checkout with plain JSON."""

    def __init__(self, keys: Sequence[PayloadKey]) -> None:
        if not keys:
            raise PayloadKeyError("the codec needs at least one key")
        self._current = keys[0]
        self._ciphers = {key.key_id: AESGCM(key.key) for key in keys}

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The configured key ids, the one that encrypts first."""
        return tuple(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        key_id = self._current.key_id
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={ENCODING_KEY: ENCODING, KEY_ID_KEY: key_id.encode()},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(ENCODING_KEY) != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_KEY)
        # Shown in errors: keep whatever an altered payload carries there short.
        key_id = raw_id.decode("utf-8", "replace")[:64] if raw_id is not None else None
        if key_id is None:
            raise PayloadDecryptionError(f"encrypted payload without {KEY_ID_KEY} metadata")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self._ciphers)
            raise PayloadDecryptionError(
                f"payload encrypted under key id {key_id!r}, which CHECKOUT_PAYLOAD_KEYS does not"
                f" hold (it has: {known}); add that key back after the current one"
            )
        data = payload.data
        if len(data) < NONCE_SIZE + TAG_SIZE:
            raise PayloadDecryptionError(f"payload under key id {key_id!r} is truncated")
        try:
            plain = cipher.decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload under key id {key_id!r} failed authentication: it was altered, or"
                " encrypted with a different key of that id"
            ) from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise PayloadDecryptionError(
                f"payload under key id {key_id!r} does not hold a Temporal payload"
            ) from None
