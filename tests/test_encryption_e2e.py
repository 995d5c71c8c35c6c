"""Encrypted payloads end to end on the real Temporal dev server: real orders through a real
worker with CHECKOUT_PAYLOAD_KEYS set, then every event of their histories read back raw. Only
the start input of an order a backend started with plain JSON is readable; search attributes
stay plain for visibility; `temporal workflow show` shows ciphertext until it is pointed at the
codec server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

import starter
from checkout.client import connect_client
from checkout.codec import ENCODING
from checkout.codec import KEY_ID_KEY
from checkout.codec import EncryptionCodec
from checkout.codec import PayloadKey
from checkout.codec import format_payload_keys
from checkout.codec import generate_key
from checkout.codec_server import start_codec_server
from checkout.config import Settings
from checkout.contract import checkout_workflow_id
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import account
from tests.helpers import address_of
from tests.helpers import checkout_handle
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import make_store
from tests.helpers import order
from tests.helpers import rejections
from tests.helpers import result_of
from tests.helpers import set_checkout_env
from tests.helpers import settings_for
from tests.helpers import start_order
from tests.helpers import temporal_cli
from workflows.checkout import CHECKOUT_V2

pytestmark = pytest.mark.e2e

TOKEN = "e2e-codec-token-0123456789"


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a proto message, with the field path that leads to it."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for key, item in value.items():
                    yield from payloads_in(item, f"{where}[{key}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{index}]")
        else:
            yield from payloads_in(value, where)


@pytest.fixture
def keys() -> tuple[PayloadKey, PayloadKey]:
    """k2 (new, encrypts) and k1 (old, still read)."""
    return generate_key("k2"), generate_key("k1")


@pytest.fixture
async def encrypted_env(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    keys: tuple[PayloadKey, PayloadKey],
) -> AsyncIterator[tuple[Client, Settings, Store]]:
    """The environment an operator sets (keys "k2,k1"), the client connect_client builds from
    it, and a worker on that client."""
    async with make_store("sqlite", tmp_path) as store:
        settings = settings_for(store, smtp_sink)
        for name in ("TEMPORAL_API_KEY", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE"):
            monkeypatch.delenv(name, raising=False)
        set_checkout_env(monkeypatch, address_of(dev_env), settings)
        monkeypatch.setenv("TEMPORAL_NAMESPACE", dev_env.client.namespace)
        monkeypatch.setenv("CHECKOUT_PAYLOAD_KEYS", format_payload_keys(keys))
        client = await connect_client()
        async with checkout_worker(client, settings, store):
            yield client, settings, store


async def history_of(client: Client, workflow_id: str) -> list[HistoryEvent]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return list(history.events)


async def test_histories_hold_no_personal_data_in_plain_text(
    dev_env: WorkflowEnvironment,
    encrypted_env: tuple[Client, Settings, Store],
    keys: tuple[PayloadKey, PayloadKey],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Four orders: one started by a plain-JSON backend, one by `checkout submit`, one by a
    client still on the old key alone, one refused for its VAT ID. In all their histories no
    VAT ID, payment token, e-mail address or account name is readable, except in the plain
    order's start input; every other payload is encrypted, under k2 unless a client wrote it
    under k1; search attributes stay plain JSON and visibility queries still find the orders."""
    client, settings, store = encrypted_env
    k2, k1 = keys
    people = {
        name: account(
            name=f"{name.title()} Geheimnis GmbH",
            billing_email=f"einkauf-{name}-{uuid.uuid4().hex[:6]}@geheimnis.example",
        )
        for name in ("plain", "submitted", "old_key", "bad_vat")
    }
    await store.import_accounts(list(people.values()))
    orders = {
        "plain": order(people["plain"].account_id, vat_id="DE136695976"),
        "submitted": order(people["submitted"].account_id, payment_method="pm_card_mastercard"),
        "old_key": order(people["old_key"].account_id, payment_method="pm_card_chargeDeclined"),
        "bad_vat": order(people["bad_vat"].account_id, vat_id="DE136695977"),
    }
    ids = {name: checkout_workflow_id(raw["order_id"]) for name, raw in orders.items()}

    # A backend without the codec: plain json/plain, as the contract allows.
    await start_order(dev_env.client, settings, orders["plain"])
    # `checkout submit` reads the same environment, so it encrypts its input too.
    order_file = tmp_path / "submitted.json"
    order_file.write_text(json.dumps(orders["submitted"]))
    assert await starter.run(["submit", str(order_file)]) == 0, capsys.readouterr().err
    # A client not yet given the new key writes under k1; the worker ("k2,k1") reads it.
    await start_order(await connect_client(payload_keys=[k1]), settings, orders["old_key"])
    await start_order(client, settings, orders["bad_vat"])

    results = {name: await result_of(checkout_handle(client, wf_id)) for name, wf_id in ids.items()}
    assert results["plain"].status is ResultStatus.COMPLETED
    assert results["submitted"].status is ResultStatus.COMPLETED
    assert rejections(results) == {"old_key": "card_declined", "bad_vat": "invalid_vat_id"}

    secrets = ["DE136695976", "DE136695977", "pm_card_visa", "pm_card_mastercard"]
    secrets += ["pm_card_chargeDeclined", "geheimnis.example", "Geheimnis GmbH"]
    for person in people.values():
        secrets += [person.billing_email, person.name]
    key_ids: dict[str, set[bytes]] = {}
    for name, workflow_id in ids.items():
        events = await history_of(dev_env.client, workflow_id)
        assert len(events) > 5, name
        for event in events:
            scanned = HistoryEvent()
            scanned.CopyFrom(event)
            started = event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
            if started:
                (start_input,) = event.workflow_execution_started_event_attributes.input.payloads
                if name == "plain":
                    # The one exception: what the plain-JSON backend sent is stored as sent.
                    assert start_input.metadata["encoding"] == b"json/plain"
                    assert b"DE136695976" in start_input.data
                    scanned.workflow_execution_started_event_attributes.ClearField("input")
                else:
                    assert start_input.metadata["encoding"] == ENCODING, name
            # The whole event, not only its payloads: failure messages and stack traces too.
            raw = scanned.SerializeToString()
            for secret in secrets:
                assert secret.encode() not in raw, (name, event.event_type, secret)
            for path, payload in payloads_in(scanned):
                if ".search_attributes." in f".{path}":
                    # Never passed through a codec: visibility must read them.
                    assert payload.metadata["encoding"] == b"json/plain", path
                    continue
                if (
                    "details[data]" in path
                    and event.marker_recorded_event_attributes.marker_name
                    == ("core_local_activity")
                ):
                    # Temporal's core's bookkeeping of a local activity (sequence, attempt,
                    # type, times); its result is in details[result], encrypted like the rest.
                    assert "activity_type" in json.loads(payload.data)
                    continue
                if "details[patch-data]" in path:
                    # The SDK's own record of the code version the run took (its patch id):
                    # written by Temporal's core, not by a payload converter; no order data.
                    assert json.loads(payload.data) == {"id": CHECKOUT_V2, "deprecated": False}
                    continue
                assert payload.metadata["encoding"] == ENCODING, (name, path)
                key_ids.setdefault(name, set()).add(payload.metadata[KEY_ID_KEY])
        (start,) = [
            e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        ]
        if name == "submitted":
            # `checkout submit` gives the UI a summary; it is a payload, so it is encrypted too.
            assert start.user_metadata.summary.metadata["encoding"] == ENCODING
        if name == "old_key":
            (start_input,) = start.workflow_execution_started_event_attributes.input.payloads
            assert start_input.metadata[KEY_ID_KEY] == k1.key_id.encode()
    # The worker wrote everything under k2; only the old client's start input is under k1.
    assert key_ids["old_key"] == {k1.key_id.encode(), k2.key_id.encode()}
    for name in ("plain", "submitted", "bad_vat"):
        assert key_ids[name] == {k2.key_id.encode()}, name

    # Search attributes are readable by a client without keys, and visibility finds the order.
    describe = await dev_env.client.get_workflow_handle(ids["submitted"]).describe()
    attributes = {pair.key.name: pair.value for pair in describe.typed_search_attributes}
    assert attributes["CheckoutStatus"] == "Completed"
    assert attributes["AccountId"] == people["submitted"].account_id

    async def listed() -> None:
        query = f'CheckoutStatus = "Completed" AND AccountId = "{people["submitted"].account_id}"'
        found = [w.id async for w in dev_env.client.list_workflows(query)]
        assert found == [ids["submitted"]]

    await eventually(listed)

    # The status query's answer is encrypted on the wire and readable to the keyed client.
    status = await client.get_workflow_handle(ids["plain"]).query("status")
    assert "completed" in json.dumps(status).lower()


async def test_temporal_cli_reads_histories_through_the_codec_server(
    dev_env: WorkflowEnvironment,
    encrypted_env: tuple[Client, Settings, Store],
    keys: tuple[PayloadKey, PayloadKey],
) -> None:
    """`temporal workflow show` prints ciphertext on its own, and the order as it was with
    `--codec-endpoint` and `--codec-auth` pointed at the codec server."""
    client, settings, store = encrypted_env
    person = account(name="Sichtbar Geheim AG", billing_email="cli-check@geheim.example")
    await store.import_accounts([person])
    raw = order(person.account_id, vat_id="DE136695976")
    await start_order(client, settings, raw)
    workflow_id = checkout_workflow_id(raw["order_id"])
    assert (await result_of(checkout_handle(client, workflow_id))).status is ResultStatus.COMPLETED

    show = ["workflow", "show", "--workflow-id", workflow_id, "--address", address_of(dev_env)]

    def start_input(json_history: str) -> Payload:
        history = json_format.Parse(json_history, History(), ignore_unknown_fields=True)
        (payload,) = history.events[0].workflow_execution_started_event_attributes.input.payloads
        return payload

    # On its own the CLI has only ciphertext to show.
    plain_json = await temporal_cli(*show, "--output", "json")
    plain_text = await temporal_cli(*show, "--detailed")
    assert start_input(plain_json).metadata["encoding"] == ENCODING
    for text in (plain_json, plain_text):
        assert "DE136695976" not in text
        assert "pm_card_visa" not in text

    server = await start_codec_server(EncryptionCodec(keys), TOKEN, port=0)
    try:
        codec = ["--codec-endpoint", server.url, "--codec-auth", f"Bearer {TOKEN}"]
        decoded_json = await temporal_cli(*show, "--output", "json", *codec)
        decoded_text = await temporal_cli(*show, "--detailed", *codec)
    finally:
        await server.close()
    decoded_input = start_input(decoded_json)
    assert decoded_input.metadata["encoding"] == b"json/plain"
    assert json.loads(decoded_input.data)["vat_id"] == "DE136695976"
    assert "input[0].vat_id: DE136695976" in decoded_text
    assert "input[0].payment_method: pm_card_visa" in decoded_text
