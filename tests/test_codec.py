"""The payload codec: AES-256-GCM under named keys, rotation, tamper detection, plain JSON let
through, and the CHECKOUT_PAYLOAD_KEYS / codec settings parsed without echoing key material."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

from checkout.client import data_converter
from checkout.codec import ENCODING
from checkout.codec import KEY_ID_KEY
from checkout.codec import NONCE_SIZE
from checkout.codec import EncryptionCodec
from checkout.codec import PayloadDecryptionError
from checkout.codec import PayloadKey
from checkout.codec import PayloadKeyError
from checkout.codec import describe_payload_keys
from checkout.codec import format_payload_keys
from checkout.codec import generate_key
from checkout.codec import parse_payload_keys
from checkout.config import ConfigError
from checkout.config import Settings

ORDER = {"order_id": "ord-1", "vat_id": "DE136695976", "payment_method": "pm_card_visa"}


async def plain_payload(value: object = ORDER) -> Payload:
    (payload,) = await pydantic_data_converter.encode([value])
    return payload


async def test_roundtrip_restores_the_payload_with_its_encoding() -> None:
    """Encrypting then decrypting gives back the very payload, metadata included."""
    codec = EncryptionCodec([generate_key("k1")])
    original = await plain_payload()
    (sealed,) = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_KEY] == b"k1"
    assert b"DE136695976" not in sealed.SerializeToString()
    (opened,) = await codec.decode([sealed])
    assert opened == original
    assert opened.metadata["encoding"] == b"json/plain"


async def test_each_payload_gets_a_fresh_nonce() -> None:
    """The same value encrypted twice gives different ciphertexts (a nonce is never reused)."""
    codec = EncryptionCodec([generate_key("k1")])
    original = await plain_payload()
    first, second = await codec.encode([original, original])
    assert first.data[:NONCE_SIZE] != second.data[:NONCE_SIZE]
    assert first.data != second.data


async def test_layout_is_nonce_then_aes_gcm_of_the_serialized_payload() -> None:
    """The documented layout: 12-byte nonce || AES-256-GCM(serialized Payload), key id as AAD;
    anyone holding the key can read it without this code."""
    key = generate_key("k1")
    original = await plain_payload()
    (sealed,) = await EncryptionCodec([key]).encode([original])
    plain = AESGCM(key.key).decrypt(sealed.data[:12], sealed.data[12:], b"k1")
    assert Payload.FromString(plain) == original
    assert len(sealed.data) == 12 + len(original.SerializeToString()) + 16


async def test_rotation_reads_old_keys_and_writes_under_the_first() -> None:
    """Data written under k1 is read once the keys are "k2,k1", and new data goes under k2."""
    k1, k2 = generate_key("k1"), generate_key("k2")
    original = await plain_payload()
    (under_k1,) = await EncryptionCodec([k1]).encode([original])
    rotated = EncryptionCodec(parse_payload_keys(format_payload_keys([k2, k1])))
    (opened,) = await rotated.decode([under_k1])
    assert opened == original
    (under_k2,) = await rotated.encode([opened])
    assert under_k2.metadata[KEY_ID_KEY] == b"k2"
    # k2 alone reads the new data, and not the old.
    assert await EncryptionCodec([k2]).decode([under_k2]) == [original]
    with pytest.raises(PayloadDecryptionError, match="'k1'"):
        await EncryptionCodec([k2]).decode([under_k1])


async def test_unknown_key_id_is_named_and_no_key_is_shown() -> None:
    """A payload under a key that is not configured fails naming that id and the ones held."""
    k0, k1 = generate_key("k0"), generate_key("k1")
    (sealed,) = await EncryptionCodec([k0]).encode([await plain_payload()])
    with pytest.raises(PayloadDecryptionError) as caught:
        await EncryptionCodec([k1]).decode([sealed])
    message = str(caught.value)
    assert "'k0'" in message
    assert "k1" in message
    for key in (k0, k1):
        assert base64.b64encode(key.key).decode() not in message


@pytest.mark.parametrize("where", ["ciphertext", "nonce", "tag", "key id", "truncated"])
async def test_tampering_is_detected(where: str) -> None:
    """Any changed byte, a relabelled key id (the id is authenticated) or a cut payload fails."""
    k1, k2 = generate_key("k1"), generate_key("k2")
    codec = EncryptionCodec([k1, k2])
    (sealed,) = await codec.encode([await plain_payload()])
    data = bytearray(sealed.data)
    if where == "ciphertext":
        data[NONCE_SIZE + 3] ^= 0x01
    elif where == "nonce":
        data[0] ^= 0x80
    elif where == "tag":
        data[-1] ^= 0x01
    elif where == "truncated":
        data = data[: NONCE_SIZE + 10]
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = bytes(data)
    if where == "key id":
        altered.metadata[KEY_ID_KEY] = b"k2"
    with pytest.raises(PayloadDecryptionError, match=r"altered|truncated"):
        await codec.decode([altered])


async def test_encrypted_payload_without_key_id_is_refused() -> None:
    """An encrypted payload that lost its key id metadata fails clearly."""
    codec = EncryptionCodec([generate_key("k1")])
    (sealed,) = await codec.encode([await plain_payload()])
    del sealed.metadata[KEY_ID_KEY]
    with pytest.raises(PayloadDecryptionError, match=KEY_ID_KEY):
        await codec.decode([sealed])


async def test_plain_json_passes_through_decode_unchanged() -> None:
    """A backend without the codec can still start a checkout with plain json/plain."""
    codec = EncryptionCodec([generate_key("k1")])
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"order_id": "ord-1"}')
    binary = Payload(metadata={"encoding": b"binary/plain"}, data=b"\x00\x01")
    null = Payload(metadata={"encoding": b"binary/null"})
    (sealed,) = await codec.encode([await plain_payload()])
    decoded = await codec.decode([plain, sealed, binary, null])
    assert decoded[0] is plain
    assert decoded[1] == await plain_payload()
    assert decoded[2:] == [binary, null]


async def test_data_converter_encrypts_values_and_failures() -> None:
    """With keys, values and failure messages are encrypted; without, plain pydantic JSON."""
    assert data_converter(()) is pydantic_data_converter
    converter = data_converter([generate_key("k1")])
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    (payload,) = await converter.encode([ORDER])
    assert payload.metadata["encoding"] == ENCODING
    assert await converter.decode([payload], [dict]) == [ORDER]


# --- parsing CHECKOUT_PAYLOAD_KEYS ----------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_keys_parse_in_order_first_encrypts() -> None:
    """Keys "k2:...,k1:..." give k2 then k1; whitespace around entries is ignored."""
    k1, k2 = os.urandom(32), os.urandom(32)
    keys = parse_payload_keys(f" k2:{b64(k2)} , k1:{b64(k1)} ")
    assert keys == (PayloadKey("k2", k2), PayloadKey("k1", k1))
    assert EncryptionCodec(keys).key_ids == ("k2", "k1")


# Fixed, not random: parameter ids must be the same in every pytest-xdist worker.
SECRET = hashlib.sha256(b"a key that must never be echoed").digest()


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (" , ", "no keys"),
        (f"k1:{b64(SECRET)[:-2]}!!", "k1: not valid base64"),
        (f"k1:{b64(SECRET[:16])}", "must be 32 bytes"),
        (f"k1:{b64(SECRET + b'x')}", "must be 32 bytes"),
        (f"k1:{b64(SECRET)},k1:{b64(SECRET[::-1])}", "k1 appears more than once"),
        (b64(SECRET), "entry 1: expected id:"),
        (f"k1:{b64(SECRET)},:{b64(SECRET)}", "entry 2: expected id:"),
        (f"k 1:{b64(SECRET)}", "key id 'k 1'"),
        (f"k1:{b64(SECRET)},", "entry 2"),
    ],
)
def test_bad_keys_are_refused_without_echoing_them(value: str, complaint: str) -> None:
    """Bad base64, a wrong length, a duplicate id, a missing id or nothing: a ConfigError that
    says what is wrong and never shows the key material."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHECKOUT_PAYLOAD_KEYS": value})
    message = str(caught.value)
    assert complaint in message
    assert message.startswith("CHECKOUT_PAYLOAD_KEYS: ")
    assert b64(SECRET) not in message
    assert b64(SECRET)[:12] not in message


def test_unset_keys_mean_no_encryption() -> None:
    """Without CHECKOUT_PAYLOAD_KEYS (or empty) payloads stay plain JSON."""
    assert Settings.from_env({}).payload_keys == ()
    assert Settings.from_env({"CHECKOUT_PAYLOAD_KEYS": ""}).payload_keys == ()


def test_empty_key_list_is_refused_by_the_parser() -> None:
    """The parser itself refuses an empty list: a codec with no key cannot encrypt."""
    with pytest.raises(PayloadKeyError, match="no keys"):
        parse_payload_keys(" ")
    with pytest.raises(PayloadKeyError, match="at least one key"):
        EncryptionCodec([])


def test_settings_never_show_keys_or_token() -> None:
    """Keys and the codec token stay out of repr, so a logged Settings leaks neither."""
    key = os.urandom(32)
    settings = Settings.from_env(
        {
            "CHECKOUT_PAYLOAD_KEYS": f"k1:{b64(key)}",
            "CHECKOUT_CODEC_TOKEN": "token-that-must-stay-secret",
            "CHECKOUT_CODEC_CORS_ORIGINS": "http://localhost:8233, https://ui.example.com",
        }
    )
    assert settings.payload_keys == (PayloadKey("k1", key),)
    assert settings.codec_token == "token-that-must-stay-secret"
    assert settings.codec_cors_origins == ("http://localhost:8233", "https://ui.example.com")
    shown = repr(settings) + repr(settings.payload_keys)
    assert b64(key) not in shown
    assert repr(key) not in shown
    assert "token-that-must-stay-secret" not in shown


@pytest.mark.parametrize("origin", ["*", "localhost:8233", "http://ui.example.com/path", "null"])
def test_cors_origins_must_be_origins(origin: str) -> None:
    """A wildcard, a bare host or a URL with a path is refused: credentials are allowed."""
    with pytest.raises(ConfigError, match="CHECKOUT_CODEC_CORS_ORIGINS"):
        Settings.from_env({"CHECKOUT_CODEC_CORS_ORIGINS": f"http://localhost:8233,{origin}"})


def test_start_up_line_names_key_ids_only() -> None:
    """The worker's start-up line says whether and under which key payloads are encrypted."""
    k2, k1 = generate_key("k2"), generate_key("k1")
    assert describe_payload_keys([]).startswith("payloads are plain JSON")
    assert describe_payload_keys([k2]) == "payloads are encrypted under key k2"
    line = describe_payload_keys([k2, k1])
    assert line == "payloads are encrypted under key k2, also reading k1"
    assert b64(k2.key) not in line
