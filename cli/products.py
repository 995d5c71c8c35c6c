"""Products: ``products pause`` and ``products resume`` (an outage of provisioning, on demand)."""

from __future__ import annotations

import argparse
from typing import Any

from checkout.catalog import Catalog, load_catalog
from checkout.config import Settings
from cli.common import CliError, open_store


def _product(catalog: Catalog, code: str) -> str:
    product = catalog.products.get(code)
    if product is None:
        known = ", ".join(sorted(catalog.products))
        raise CliError(f"unknown product {code!r} (the catalog has: {known})")
    return product.name


async def _set_paused(args: argparse.Namespace, settings: Settings, paused: bool) -> int:
    name = _product(load_catalog(settings.catalog_path), args.product)
    async with open_store(settings) as store:
        await store.set_paused(args.product, paused)
    if paused:
        print(
            f"paused {args.product} ({name}): its provisioning fails as in an outage; orders"
            f" park in NeedsAttention after {settings.provisioning_max_attempts} attempts"
        )
    else:
        print(f"resumed {args.product} ({name}): parked orders continue with `checkout retry`")
    return 0


async def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_paused(args, settings, True)


async def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_paused(args, settings, False)


def add_commands(commands: Any) -> None:
    products = commands.add_parser("products", help="pause or resume provisioning").add_subparsers(
        dest="products_command", required=True, metavar="ACTION"
    )
    pause = products.add_parser("pause", help="make provisioning of a product fail (outage)")
    pause.add_argument("product", metavar="PRODUCT")
    pause.set_defaults(handler=cmd_pause)
    resume = products.add_parser("resume", help="let provisioning of a product work again")
    resume.add_argument("product", metavar="PRODUCT")
    resume.set_defaults(handler=cmd_resume)
