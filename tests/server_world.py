"""A gateway with the demo partners, a store in a temporary folder and (optionally) the demo
registries, for the server-side ECM flow tests (registries, routes, state responses, extracts).
Processing runs through the real pipeline (`submit`)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from conftest import FIXTURES, ROOT

from gateway.pipeline.partners import Partners, issue_demo_tokens
from gateway.pipeline.process import submit
from gateway.pipeline.registries import load_demo_registries, server_registry
from gateway.pipeline.store import Store

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


@dataclass
class World:
    store: Store
    partners: Partners

    def send(self, partner: str, payload: bytes, *, kind: str = "x12",
             filename: str | None = None):
        return submit(self.store, self.partners, self.partners.partners[partner],
                      channel="api", kind=kind, filename=filename, payload=payload)

    def upload(self, partner: str, path: Path, name: str | None = None,
               payload: bytes | None = None):
        return self.send(partner, payload if payload is not None else path.read_bytes(),
                         kind="file", filename=name or path.name)

    def box(self, partner: str, submission_id: str | None = None) -> list[dict]:
        """The partner's mailbox (oldest first), optionally of one submission only."""
        items = [d for d in reversed(self.store.mailbox(partner))
                 if submission_id is None or d["submission_id"] == submission_id]
        return items

    def content(self, document: dict) -> bytes:
        return self.store.document(document["id"])["content"]

    def rows(self, document: dict) -> list[list[str]]:
        return list(csv.reader(io.StringIO(self.content(document).decode("utf-8-sig"))))

    @property
    def registry(self):
        return server_registry(self.store)


def make_world(tmp_path: Path, demo_registries: bool = True) -> World:
    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "partners.yaml")
    partners = Partners.load(tmp_path / "partners.yaml")
    store = Store(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    if demo_registries:
        load_demo_registries(store, partners)
    return World(store, partners)


def claim_ids(x12: bytes) -> list[str]:
    return [s.split("*")[1] for s in x12.decode().replace("\n", "").split("~")
            if s.startswith("CLM*")]
