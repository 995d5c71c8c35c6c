"""One way to connect to Temporal, used by the worker, the commands and the tests."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig


async def connect_client(target: str | None = None, namespace: str | None = None) -> Client:
    """Connect the way Temporal's own tools do: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
    ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` and profiles, with plain-JSON pydantic payloads."""
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    if target is not None:
        config["target_host"] = target
    if namespace is not None:
        config["namespace"] = namespace
    return await Client.connect(**config, data_converter=pydantic_data_converter)
