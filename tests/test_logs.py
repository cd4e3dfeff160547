"""A full run through every channel leaves no member data in any log record."""

import csv
import logging

from conftest import FIXTURES
from test_api import gateway  # noqa: F401 - the fixture

from gateway.logs import JsonFormatter


def fixture_member_data() -> set[str]:
    secrets = set()
    for name in ("mif-clean.csv",):
        with open(FIXTURES / "mif" / name, encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                secrets.update({row["Member CIN"], row["Member Last Name"],
                                row["Member First Name"], row["Member Last Name"].upper()})
    for segment in (FIXTURES / "837p" / "ecm-mixed.x12").read_text().split("~"):
        fields = segment.strip().split("*")
        if fields[0] == "NM1" and fields[1] in ("IL", "QC"):
            secrets.update({fields[3], fields[4], fields[9]})
    return {s for s in secrets if len(s) > 2}


def test_no_member_data_in_the_logs_of_a_full_run(gateway, caplog):  # noqa: F811
    client, auth = gateway
    caplog.set_level(logging.DEBUG)  # everything, from every logger, pyx12 included
    client.post("/x12", content=(FIXTURES / "837p" / "ecm-mixed.x12").read_bytes(),
                headers=auth["harbor"])
    client.post("/x12", content=(FIXTURES / "837p" / "ecm-claim-defects.x12").read_bytes(),
                headers=auth["harbor"])
    with open(FIXTURES / "invoice" / "invoice-mixed.csv", "rb") as handle:
        client.post("/files", files={"file": ("invoice.csv", handle, "text/csv")},
                    headers=auth["harbor"])
    client.post("/files", files={"file": ("mif.csv", (FIXTURES / "mif" / "mif-clean.csv")
                                          .read_bytes(), "text/csv")},
                headers=auth["demo-plan"])
    client.post("/x12", content=b"ISA*garbage", headers=auth["harbor"])
    records = caplog.records
    assert any(r.name == "gateway.pipeline" for r in records)  # the run did log
    text = "\n".join(f"{r.name} {r.getMessage()} {JsonFormatter().format(r)}" for r in records)
    leaked = sorted(s for s in fixture_member_data() if s in text)
    assert leaked == []


def test_json_log_lines():
    record = logging.LogRecord("gateway.pipeline", logging.INFO, __file__, 1,
                               "submission stored", None, None)
    record.submission_id, record.kind = "abc", "x12"
    line = JsonFormatter().format(record)
    assert '"message": "submission stored"' in line and '"submission_id": "abc"' in line
