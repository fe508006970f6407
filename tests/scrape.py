"""Scraping a server's /metrics over HTTP, as Prometheus does, and reading one sample of what it answered."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "scrape"]


class Samples:
    """Every sample of one scrape, by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self._values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def get(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels; None if the scrape had none."""
        return self._values.get((name, frozenset(labels.items())))

    def names(self) -> set[str]:
        return {name for name, _ in self._values}


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        return Samples(answer.read().decode())
