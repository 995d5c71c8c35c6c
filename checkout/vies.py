"""VAT ID verification: offline (format and check digits) or also against VIES, the EU's VAT
information exchange system, over its REST API.

VIES is often down for one member state or another. "Unknown" never becomes "invalid": after a
few tries with backoff the customer is carried on as a consumer (VAT charged) and the order
records ``vat_id_status = "unverified"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from dataclasses import KW_ONLY
from dataclasses import dataclass
from typing import Any
from typing import Literal

from checkout.echo import escape
from checkout.echo import quote
from checkout.models import VatCheck
from checkout.vat import InvalidVatId
from checkout.vat import validate_vat_id

log = logging.getLogger(__name__)

#: VIES's ``userError`` values that are an answer about the number. Every other value
#: (MS_UNAVAILABLE, TIMEOUT, SERVICE_UNAVAILABLE, the *_MAX_CONCURRENT_REQ* family, IP_BLOCKED,
#: VAT_BLOCKED, and any code VIES adds later) means "we could not ask the member state", never
#: "the number is invalid": retried, then ``unverified``.
_ANSWERS = {"VALID", "INVALID", "INVALID_INPUT"}


class ViesUnavailable(Exception):
    """VIES could not answer this time."""


@dataclass
class VatVerifier:
    mode: Literal["offline", "vies"] = "offline"
    _: KW_ONLY
    vies_url: str = ""
    attempts: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 10.0

    async def verify(self, vat_id: str, country: str) -> VatCheck:
        """The compact VAT ID and whether it is valid or unverified; raises InvalidVatId."""
        compact = validate_vat_id(vat_id, country)
        if self.mode == "offline":
            return VatCheck(vat_id=compact, status="valid")
        delay = self.backoff_seconds
        for attempt in range(1, self.attempts + 1):
            try:
                valid = await asyncio.to_thread(self._ask_vies, compact)
            except ViesUnavailable as exc:
                log.warning(
                    "VIES unavailable for %s (attempt %d): %s",
                    compact[:2],
                    attempt,
                    escape(exc, 300),
                )
                if attempt < self.attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                continue
            if not valid:
                raise InvalidVatId(f"vat_id: VIES reports {quote(compact)} as not registered")
            return VatCheck(vat_id=compact, status="valid")
        return VatCheck(vat_id=compact, status="unverified")

    def _ask_vies(self, compact: str) -> bool:
        body = json.dumps({"countryCode": compact[:2], "vatNumber": compact[2:]}).encode()
        # The URL comes from our own configuration (CHECKOUT_VIES_URL), never from a customer.
        request = urllib.request.Request(  # noqa: S310
            self.vies_url,
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise ViesUnavailable(str(exc)) from exc
        error = answer.get("userError") or answer.get("errorWrappers")
        if isinstance(error, str) and error and error not in _ANSWERS:
            raise ViesUnavailable(error)
        if isinstance(error, list) and error:
            raise ViesUnavailable(str(error[0].get("error", error)))
        if "valid" not in answer:
            raise ViesUnavailable(f"unexpected answer: {escape(answer, 200)}")
        return bool(answer["valid"])
