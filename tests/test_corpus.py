"""Verdicts of ``validate_x12`` on the external stupidedi corpus (``../shared/corpora``).

The corpus sits beside the repository, not in it; every test here is skipped when it is
missing. Expected verdicts are documented in the corpus README (its pyx12 characterisation
section): the ``pass/`` files are valid except three 837I fixtures with real TR3 problems
(5-digit billing-provider ZIP, RD8 with a single date), and every historical ``fail/`` file
must be rejected.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.findings import Severity
from gateway.x12.validate import validate_x12

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "x12-stupidedi"

# folder (relative to the corpus) -> the kind validate_x12 must report for its files
KINDS = {
    "837p-X222A1/pass": "837p",
    "837i-X223A2/pass": "837i",
    "999-X231A1/pass": "999",
    "835-X221A1/pass": "835",
    "history-3daab210/277ca-X214/pass": "277ca",
    "history-3daab210/277ca-X214/fail": "277ca",
    "history-3daab210/835-X221A1/pass": "835",
    "history-3daab210/835-X221A1/fail": "835",
    "history-3daab210/999-X231A1/pass": "999",
}

# how many files each folder is expected to hold (guards against a silently shrunken corpus)
COUNTS = {
    "837p-X222A1/pass": 16,
    "837i-X223A2/pass": 5,
    "999-X231A1/pass": 1,
    "835-X221A1/pass": 7,
    "history-3daab210/277ca-X214/fail": 3,
    "history-3daab210/835-X221A1/fail": 4,
}

# 837I fixtures with real TR3 problems (README: 5-digit 2010AA ZIP; RD8 with one date)
INVALID_837I = {
    "837-institutional-claim.edi",
    "automobile-accident.edi",
    "two-claims-for-the-same-provider.edi",
}
VALID_837I = {"out-of-network-repriced-claim.edi", "ppo-repriced-claim.edi"}

_MISSING = "<corpus missing>"


def _files(*folders: str) -> list[str]:
    """Corpus-relative paths of the ``.edi`` files in ``folders`` (collection time)."""
    if not CORPUS.is_dir():
        return [_MISSING]
    found = []
    for folder in folders:
        found += sorted(p.relative_to(CORPUS).as_posix() for p in (CORPUS / folder).glob("*.edi"))
    return found or [_MISSING]


def _history_fail() -> list[str]:
    if not CORPUS.is_dir():
        return [_MISSING]
    return sorted(p.relative_to(CORPUS).as_posix()
                  for p in CORPUS.glob("history-3daab210/*/fail/*.edi")) or [_MISSING]


@pytest.fixture(scope="module")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"external X12 corpus not found at {CORPUS}")
    return CORPUS


def _validate(corpus: Path, rel: str):
    if rel == _MISSING:
        pytest.fail(f"no corpus files found for this test under {corpus}")
    # the verdicts below are SNIP 1-2 (syntax and the implementation guide), which is what
    # the corpus labels mean; its identifiers are placeholders that SNIP 5 rejects (see
    # test_snip5_finds_the_placeholder_identifiers)
    return validate_x12(str(corpus / rel), snip=False)


def _describe(result) -> str:
    return "\n".join(f"  {f.rule} {f.severity.value} {f.location}: {f.message}"
                     for f in result.findings) or "  (no findings)"


def _errors(result):
    return [f for f in result.findings if f.severity is Severity.ERROR]


# -- corpus layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("folder, count", sorted(COUNTS.items()))
def test_corpus_folder_has_expected_file_count(corpus, folder, count):
    assert len(list((corpus / folder).glob("*.edi"))) == count


# -- every file: no exception, right kind, same answer from path, bytes and stream -------------

ALL_FILES = _files(*KINDS)


@pytest.mark.parametrize("rel", ALL_FILES)
def test_no_exception_and_kind(corpus, rel):
    result = _validate(corpus, rel)  # any exception escaping fails the test
    folder = rel.rsplit("/", 1)[0]
    assert result.kind == KINDS[folder], _describe(result)


@pytest.mark.parametrize("rel", ALL_FILES)
def test_path_bytes_and_stream_agree(corpus, rel):
    if rel == _MISSING:
        pytest.fail("no corpus files found")
    data = (corpus / rel).read_bytes()
    by_path = validate_x12(str(corpus / rel))
    by_bytes = validate_x12(data)
    by_stream = validate_x12(io.BytesIO(data))

    def key(result):
        return (result.kind, result.valid,
                [(f.rule, f.severity, f.location, f.segment, f.message) for f in result.findings])

    assert key(by_path) == key(by_bytes) == key(by_stream)


# -- expected verdicts ---------------------------------------------------------------------------

@pytest.mark.parametrize("rel", _files("837p-X222A1/pass"))
def test_837p_pass_files_are_valid(corpus, rel):
    result = _validate(corpus, rel)
    assert result.kind == "837p"
    assert result.valid, f"{rel} rejected:\n{_describe(result)}"


@pytest.mark.parametrize("name", ["oxygen.edi", "wheelchair.edi"])
def test_837p_dme_pwk_is_not_reported(corpus, name):
    """``PWK*CT*AD`` is the 2400 DME CMN indicator PWK, where PWK02=AD is allowed (pyx12 alone
    matches it to the line supplemental PWK and reports a false positive)."""
    result = _validate(corpus, f"837p-X222A1/pass/{name}")
    assert result.valid, _describe(result)
    pwk = [f for f in result.findings
           if "PWK" in f.message or "PWK" in f.location or "PWK" in f.rule]
    assert not pwk, _describe(result)


@pytest.mark.parametrize("rel", _files("837i-X223A2/pass"))
def test_837i_verdicts(corpus, rel):
    name = rel.rsplit("/", 1)[1]
    assert name in INVALID_837I | VALID_837I, f"unexpected 837I fixture {name}"
    result = _validate(corpus, rel)
    assert result.kind == "837i"
    if name in VALID_837I:
        assert result.valid, f"{rel} rejected:\n{_describe(result)}"
        return
    assert not result.valid, f"{rel} accepted:\n{_describe(result)}"
    zip_findings = [f for f in result.findings
                    if f.rule == "X12-IG-ELE-7" and "2010AA" in f.location and "N403" in f.location]
    assert zip_findings, f"no 2010AA N403 ZIP finding:\n{_describe(result)}"
    assert all(f.severity is Severity.ERROR for f in zip_findings)
    # the billing provider N4 is segment 12 in all three fixtures
    assert [f.segment for f in zip_findings] == [12], _describe(result)
    assert zip_findings[0].location == "ISA#1/GS#1/ST#1/2010AA[1]/N403"


def test_837i_institutional_claim_rd8_single_date(corpus):
    """``DTP*434*RD8*19960911``: a range qualifier with one date."""
    result = _validate(corpus, "837i-X223A2/pass/837-institutional-claim.edi")
    assert not result.valid
    rd8 = [f for f in result.findings if f.rule == "X12-IG-ELE-8"]
    assert len(rd8) == 1, _describe(result)
    finding = rd8[0]
    assert finding.severity is Severity.ERROR
    assert finding.location == "ISA#1/GS#1/ST#1/2300[1]/DTP03"
    assert finding.segment == 23
    assert "DTP03" in finding.message and "date" in finding.message.lower()
    # exactly the two problems the README documents, nothing else
    assert sorted(f.rule for f in _errors(result)) == ["X12-IG-ELE-7", "X12-IG-ELE-8"]


@pytest.mark.parametrize("name", ["automobile-accident.edi", "two-claims-for-the-same-provider.edi"])
def test_837i_zip_is_the_only_error(corpus, name):
    result = _validate(corpus, f"837i-X223A2/pass/{name}")
    assert [f.rule for f in _errors(result)] == ["X12-IG-ELE-7"], _describe(result)


@pytest.mark.parametrize("rel", _files("999-X231A1/pass"))
def test_999_pass_files_are_valid(corpus, rel):
    """Includes the BOM file and the CTX (segment context) + CTX (business unit) pair that
    pyx12 alone reports as "CTX exceeded max count"."""
    result = _validate(corpus, rel)
    assert result.kind == "999"
    assert result.valid, f"{rel} rejected:\n{_describe(result)}"


@pytest.mark.parametrize("rel", _files("835-X221A1/pass"))
def test_835_pass_files_are_valid(corpus, rel):
    result = _validate(corpus, rel)
    assert result.kind == "835"
    assert result.valid, f"{rel} rejected:\n{_describe(result)}"


@pytest.mark.parametrize("rel", _history_fail())
def test_history_fail_files_are_rejected(corpus, rel):
    result = _validate(corpus, rel)
    assert not result.valid, f"{rel} accepted:\n{_describe(result)}"
    assert len(_errors(result)) >= 1


@pytest.mark.parametrize("rel", _files("837p-X222A1/pass"))
def test_snip5_finds_the_placeholder_identifiers(corpus, rel):
    """With SNIP 3-7 on, the only new errors in the 837P pass files are SNIP 5 external code
    set edits on their invented identifiers (NPIs without a valid check digit, 8-digit TINs,
    4-digit ZIPs, made-up taxonomy codes); claims balance and dates are in order."""
    snip_only = [f for f in _errors(validate_x12(str(corpus / rel)))
                 if f.rule.startswith("X12-SNIP")]
    assert {f.rule for f in snip_only} <= {"X12-SNIP5-NPI", "X12-SNIP5-TIN", "X12-SNIP5-ZIP",
                                           "X12-SNIP5-TAXONOMY"}, _describe_list(snip_only)


def _describe_list(findings) -> str:
    return "\n".join(f"  {f.rule} {f.location}: {f.message}" for f in findings)
