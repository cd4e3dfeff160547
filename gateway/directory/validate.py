"""Validating a 274 provider directory: the X12 engine (envelope, SNIP levels, through the map
profiles/x12/274.4050.X109.xml) once its guide is registered in profiles/x12/envelope.yaml,
plus the directory reader's own findings (NPIs, dates, model codes). One home for both the
command line (``validate file.274``) and the server's directory upload."""

from __future__ import annotations

from pathlib import Path

from gateway.directory.x274 import GUIDE, Directory274Reader
from gateway.findings import Finding

# what the directory reader reports that the engine's SNIP checks already cover (structure:
# unknown segments and HL codes, envelope, SE01); a reader finding on a segment the engine
# already reported is left out too. The HL parent check (DIR-274-003) stays: the map does not
# express which level may sit under which.
STRUCTURE_RULES = frozenset({"DIR-274-001", "DIR-274-002", "DIR-274-004", "DIR-274-009"})


def engine_knows_274() -> bool:
    from gateway.x12.envelope import envelope_profile

    return GUIDE in envelope_profile().guides


def validate_274_file(path: Path) -> tuple[list[Finding], dict]:
    """Findings and counts of a 274 file. Raises NotX12Error for input that is not X12."""
    reader = Directory274Reader(path)
    for _group in reader:
        pass
    findings = list(reader.findings)
    stats = dict(reader.stats)
    if engine_knows_274():
        from gateway.x12.validate import validate_x12

        result = validate_x12(str(path))
        reported = {f.segment for f in result.findings if f.segment is not None}
        findings = list(result.findings) + [
            f for f in findings if f.rule not in STRUCTURE_RULES
            and (f.segment not in reported or f.rule == "DIR-274-003")]
        stats["segments"] = result.segments
    return findings, stats
