"""The processing steps, one module per kind of submission, each run from the raw payload the
store kept (so a run can be replayed, or re-run after a crash, at any time):

* :mod:`.x12` — an X12 837P: validated, acknowledged (TA1/999/277CA), routed;
* :mod:`.invoice` — an uploaded invoice (an 837P per member's plan, a row report back);
* :mod:`.tabular` — a plan's MIF or roster (registries; MIF rows forwarded to the assigned
  providers), a provider's RTF/OTF (rows to the member's plan);
* :mod:`.state_response` — the state's response XML (linked to the 837Ps sent to the state);
* :mod:`.fhir` — a provider's FHIR resources (referral records, RTF rows, 837P);
* :mod:`.extract` — a provider's encounter-history extract;
* :mod:`.directory` — a plan's provider directory (roster, 274, Plan-Net) and the monthly 274
  to the state per county.

Every step has the signature ``step(store, partners, partner, submission_id) ->``
:class:`~gateway.pipeline.steps.result.StepResult`: it decides (through
:mod:`gateway.pipeline.delivery` for sender authorisation, plan resolution, control numbers
and per-recipient documents) and returns what it decided; the one harness
(:func:`gateway.pipeline.process.run_claimed`) writes the result in one transaction. Registry
writes replace by source and routing records are rewritten per submission, so running a step
twice leaves the registries as one run does.

:data:`STEPS` maps a submission kind to its step.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from gateway.pipeline.delivery import X12_MEDIA
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.steps.directory import (
    SUFFIX as DIRECTORY_SUFFIX,
)
from gateway.pipeline.steps.directory import (
    directory_kind,
    is_274,
    process_directory_upload,
    process_monthly_274,
)
from gateway.pipeline.steps.extract import process_history_extract
from gateway.pipeline.steps.fhir import process_fhir
from gateway.pipeline.steps.invoice import process_invoice
from gateway.pipeline.steps.result import Outcome, StepResult
from gateway.pipeline.steps.state_response import process_state_response
from gateway.pipeline.steps.tabular import is_member_table, process_table
from gateway.pipeline.steps.x12 import process_x12

__all__ = ["STEPS", "Outcome", "StepResult", "X12_MEDIA", "process_file", "process_fhir",
           "process_history_extract", "process_x12"]


def process_file(store, partners: Partners, partner: Partner, submission_id: str,
                 now: datetime | None = None) -> StepResult:
    """An upload (kind ``file``): the state's response XML (:mod:`.state_response`), a member
    table (:mod:`.tabular`), an invoice or another table (:mod:`.invoice`)."""
    from gateway.sniff import UnknownKind, sniff
    from gateway.tabular import sniff_table

    now = now or datetime.now(UTC)
    found = store.submission(submission_id)
    suffix = Path(found.get("filename") or "upload").suffix.lower()
    with tempfile.TemporaryDirectory(prefix="ecm-upload-") as folder:
        path = Path(folder) / f"upload{suffix if suffix in ('.csv', '.xlsx', '.txt') else ''}"
        path.write_bytes(store.raw_payload(submission_id))
        try:
            kind = sniff(path)
        except UnknownKind:
            kind = None
        if kind == "state-response":
            return process_state_response(store, partners, partner, submission_id,
                                          path.read_bytes(), now)
        directory = directory_kind(path)
        if directory is not None:  # a plan's provider directory (refused from anyone else)
            return process_directory_upload(store, partners, partner, submission_id, path,
                                            directory)
        if kind in ("csv", "xlsx"):
            table_kind = sniff_table(path)
            if is_member_table(partner, table_kind):
                return process_table(store, partners, partner, submission_id, path,
                                     table_kind, now)
        return process_invoice(store, partners, partner, submission_id, path, now)


def process_interchange(store, partners: Partners, partner: Partner, submission_id: str,
                        now: datetime | None = None) -> StepResult:
    """An X12 submission: a 274 provider directory (:mod:`.directory`), else :mod:`.x12`."""
    payload = store.raw_payload(submission_id)
    if is_274(payload):
        with tempfile.TemporaryDirectory(prefix="ecm-directory-") as folder:
            path = Path(folder) / f"directory{DIRECTORY_SUFFIX['274']}"
            path.write_bytes(payload)
            return process_directory_upload(store, partners, partner, submission_id, path,
                                            "274")
    return process_x12(store, partners, partner, submission_id, now)


STEPS = {"x12": process_interchange, "file": process_file,
         "history-extract": process_history_extract, "fhir": process_fhir,
         "directory-274": process_monthly_274}
