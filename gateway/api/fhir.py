"""The FHIR R4 API under ``/fhir`` (contract.md). Being built (issue 6)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI


def install_fhir(app: FastAPI, partner_of: Callable) -> None:
    """Add the ``/fhir`` routes and their OperationOutcome error handling to ``app``;
    ``partner_of`` is the bearer-token dependency that yields the calling Partner."""
