"""Products: ``products list`` (the catalog), ``products pause`` and ``products resume`` (an
outage of provisioning, on demand)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.config import Settings
from checkout.echo import quote
from cli import render
from cli.common import CliError
from cli.common import open_store


def _product(catalog: Catalog, code: str) -> str:
    product = catalog.products.get(code)
    if product is None:
        known = ", ".join(sorted(catalog.products))
        raise CliError(f"unknown product {quote(code)} (the catalog has: {known})")
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


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """The catalog: products, plans, prices per currency and cycle, trial, seat limit."""
    catalog = load_catalog(settings.catalog_path)
    async with open_store(settings) as store:
        paused = await store.paused_products()
    if args.json:
        listing = {
            "products": [
                {
                    "product": code,
                    "name": product.name,
                    "trial_days": product.trial_days,
                    "max_seats": product.max_seats,
                    "paused": code in paused,
                    "plans": [
                        {
                            "plan": plan_code,
                            "name": plan.name,
                            "prices": {
                                currency: {"monthly": str(p.monthly), "annual": str(p.annual)}
                                for currency, p in sorted(plan.prices.items())
                            },
                        }
                        for plan_code, plan in product.plans.items()
                    ],
                }
                for code, product in sorted(catalog.products.items())
            ]
        }
        print(json.dumps(listing, indent=2))
        return 0
    rows = [
        [
            code,
            plan_code,
            f"{product.name} {plan.name}",
            ", ".join(
                f"{p.monthly}/{p.annual} {currency}" for currency, p in sorted(plan.prices.items())
            ),
            f"{product.trial_days} days" if product.trial_days else "none",
            str(product.max_seats),
            "paused" if code in paused else "",
        ]
        for code, product in sorted(catalog.products.items())
        for plan_code, plan in product.plans.items()
    ]
    print(
        render.table(
            ["PRODUCT", "PLAN", "NAME", "PER SEAT (MONTH/YEAR)", "TRIAL", "MAX SEATS", ""], rows
        )
    )
    return 0


async def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_paused(args, settings, True)


async def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_paused(args, settings, False)


def add_commands(commands: Any) -> None:
    products = commands.add_parser(
        "products", help="the catalog; pause or resume provisioning"
    ).add_subparsers(dest="products_command", required=True, metavar="ACTION")
    listing = products.add_parser("list", help="products, plans, prices, trials, seat limits")
    listing.add_argument("--json", action="store_true", help="print the catalog as JSON")
    listing.set_defaults(handler=cmd_list)
    pause = products.add_parser("pause", help="make provisioning of a product fail (outage)")
    pause.add_argument("product", metavar="PRODUCT")
    pause.set_defaults(handler=cmd_pause)
    resume = products.add_parser("resume", help="let provisioning of a product work again")
    resume.add_argument("product", metavar="PRODUCT")
    resume.set_defaults(handler=cmd_resume)
