"""Reading a Prometheus endpoint the way a scraper does: the text format, parsed into samples."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

from devtools import LOOPBACK

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Samples:
    """One scrape: every sample line as (name, labels, value); ``types`` from ``# TYPE`` lines."""

    samples: list[tuple[str, dict[str, str], float]]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and labels.items() <= have.items()
        )

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [have for sample, have, _ in self.samples if sample == name]


def parse_metrics(text: str) -> Samples:
    """Prometheus' text exposition format (what ``/metrics`` serves)."""
    samples: list[tuple[str, dict[str, str], float]] = []
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
            continue
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        labels = {
            m["key"]: m["value"].replace('\\"', '"').replace("\\\\", "\\")
            for m in _LABEL.finditer(match["labels"] or "")
        }
        samples.append((match["name"], labels, float(match["value"])))
    return Samples(samples, types)


def scrape(port: int, host: str = LOOPBACK) -> Samples:
    """GET http://host:port/metrics and parse it (blocking: call it through asyncio.to_thread)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return parse_metrics(response.read().decode())
