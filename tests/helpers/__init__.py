"""Everything a test needs besides its fixtures (those are in tests/conftest.py), in one place:

- builders: accounts, order items, orders, subscriptions (``devtools.builders``), catalogs;
- stores: stores on SQLite and PostgreSQL;
- workers: worker settings, workers, starting, running and awaiting orders;
- polling: ``eventually`` and ``reaches`` a status;
- mail: what arrived at the SMTP sink;
- processes: ``worker.py`` as a process of its own;
- temporal: the Temporal servers and CLI;
- cli: the ``checkout`` command run in this process.

The local-stack tools that are not only for tests (free ports, the SMTP sink, the Temporal
binaries) are in the top-level ``devtools`` package.
"""

from devtools.builders import paid_subscription
from tests.helpers.builders import (
    TRIAL,
    account,
    buy,
    catalog_with,
    new_order,
    now,
    order,
    seeded_account,
    trial,
)
from tests.helpers.cli import Cli, point_checkout_at, run_checkout
from tests.helpers.mail import mail_arrived, mail_of, purposes, text_of
from tests.helpers.polling import eventually, reaches, state_of
from tests.helpers.processes import (
    EXIT_WITHIN,
    REPO,
    WorkerProcess,
    address_of,
    checkout_env,
    run_worker_to_exit,
    set_checkout_env,
    worker_env,
    worker_process,
)
from tests.helpers.stores import make_store, store_url
from tests.helpers.temporal import dev_server, temporal_cli, time_skipping_server
from tests.helpers.workers import (
    MakeSettings,
    activities_with,
    checkout_handle,
    checkout_worker,
    end_trial,
    park_order,
    place_order,
    rejections,
    result_of,
    run_order,
    settings_for,
    start_order,
    unique_queue,
)

__all__ = [
    "EXIT_WITHIN",
    "REPO",
    "TRIAL",
    "Cli",
    "MakeSettings",
    "WorkerProcess",
    "account",
    "activities_with",
    "address_of",
    "buy",
    "catalog_with",
    "checkout_env",
    "checkout_handle",
    "checkout_worker",
    "dev_server",
    "end_trial",
    "eventually",
    "mail_arrived",
    "mail_of",
    "make_store",
    "new_order",
    "now",
    "order",
    "paid_subscription",
    "park_order",
    "place_order",
    "point_checkout_at",
    "purposes",
    "reaches",
    "rejections",
    "result_of",
    "run_checkout",
    "run_order",
    "run_worker_to_exit",
    "seeded_account",
    "set_checkout_env",
    "settings_for",
    "start_order",
    "state_of",
    "store_url",
    "temporal_cli",
    "text_of",
    "time_skipping_server",
    "trial",
    "unique_queue",
    "worker_env",
    "worker_process",
]
