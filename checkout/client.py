"""One way to connect to Temporal, used by the worker, the commands and the tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from checkout.codec import EncryptionCodec
from checkout.codec import PayloadKey
from checkout.config import Settings


def data_converter(payload_keys: Sequence[PayloadKey] = ()) -> DataConverter:
    """Plain-JSON pydantic payloads; with keys, every payload encrypted (see
    docs/payload-encryption.md).

    With keys, failure messages and stack traces are moved into an encrypted payload too: an
    error can quote an address or a VAT ID. Search attributes never pass through a codec (the
    SDK encodes them with the payload converter alone), so they stay readable to visibility
    queries, and so must never hold personal data."""
    if not payload_keys:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(payload_keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect_client(
    target: str | None = None,
    namespace: str | None = None,
    *,
    payload_keys: Sequence[PayloadKey] | None = None,
    runtime: Runtime | None = None,
    identity: str | None = None,
) -> Client:
    """Connect the way Temporal's own tools do: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
    ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` and profiles, with plain-JSON pydantic payloads,
    encrypted when ``CHECKOUT_PAYLOAD_KEYS`` (or ``payload_keys``) is set. A ``runtime`` (the
    worker's, serving metrics) carries the client's and its workers' telemetry. ``identity`` is
    what Temporal records as the caller of everything this client does (the SDK's ``pid@host``
    otherwise)."""
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    if target is not None:
        config["target_host"] = target
    if namespace is not None:
        config["namespace"] = namespace
    keys = Settings.from_env().payload_keys if payload_keys is None else payload_keys
    return await Client.connect(
        **config, data_converter=data_converter(keys), runtime=runtime, identity=identity
    )
