"""HTTP as a browser speaks it to the codec server and the demo's Web UI proxy."""

from __future__ import annotations

import aiohttp


async def preflight(
    http: aiohttp.ClientSession, url: str, origin: str, *sends: str
) -> aiohttp.ClientResponse:
    """The answer to a browser's CORS preflight for a POST to ``url`` from a page of ``origin``
    that will send the headers ``sends`` (none named: the question leaves them out)."""
    asked = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    if sends:
        asked["Access-Control-Request-Headers"] = ",".join(sends)
    async with http.options(url, headers=asked) as resp:
        return resp
