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
from tests.helpers.builders import TRIAL
from tests.helpers.builders import account
from tests.helpers.builders import buy
from tests.helpers.builders import catalog_with
from tests.helpers.builders import new_order
from tests.helpers.builders import now
from tests.helpers.builders import order
from tests.helpers.builders import seeded_account
from tests.helpers.builders import trial
from tests.helpers.cancels import Gate
from tests.helpers.cancels import assert_credited
from tests.helpers.cancels import assert_replays
from tests.helpers.cancels import cancel_at_the_gate
from tests.helpers.cli import Cli
from tests.helpers.cli import point_checkout_at
from tests.helpers.cli import run_checkout
from tests.helpers.mail import mail_arrived
from tests.helpers.mail import mail_of
from tests.helpers.mail import purposes
from tests.helpers.mail import text_of
from tests.helpers.polling import eventually
from tests.helpers.polling import reaches
from tests.helpers.polling import state_of
from tests.helpers.processes import EXIT_WITHIN
from tests.helpers.processes import REPO
from tests.helpers.processes import WorkerProcess
from tests.helpers.processes import address_of
from tests.helpers.processes import checkout_env
from tests.helpers.processes import run_worker_to_exit
from tests.helpers.processes import set_checkout_env
from tests.helpers.processes import worker_env
from tests.helpers.processes import worker_process
from tests.helpers.stores import make_store
from tests.helpers.stores import store_url
from tests.helpers.temporal import dev_server
from tests.helpers.temporal import temporal_cli
from tests.helpers.temporal import time_skipping_server
from tests.helpers.workers import MakeSettings
from tests.helpers.workers import activities_with
from tests.helpers.workers import checkout_handle
from tests.helpers.workers import checkout_worker
from tests.helpers.workers import end_trial
from tests.helpers.workers import park_order
from tests.helpers.workers import place_order
from tests.helpers.workers import rejections
from tests.helpers.workers import result_of
from tests.helpers.workers import run_order
from tests.helpers.workers import settings_for
from tests.helpers.workers import start_order
from tests.helpers.workers import unique_queue

__all__ = [
    "EXIT_WITHIN",
    "REPO",
    "TRIAL",
    "Cli",
    "Gate",
    "MakeSettings",
    "WorkerProcess",
    "account",
    "activities_with",
    "address_of",
    "assert_credited",
    "assert_replays",
    "buy",
    "cancel_at_the_gate",
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
