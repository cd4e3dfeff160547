"""Benchmark: a hostile FHIR body costs the gateway no more than a normal one.

``POST /fhir/CarePlan`` through the API app in this process (its SQLite store in a temporary
folder, the demo partners), each case the median of ``--repeat`` requests:

* ``valid``     -- the fixture CarePlan (≈ 2 KB): the reference;
* ``flat``      -- the same with ``--megabytes`` (2) MB of unknown members in the root object:
  refused unchecked (``FHIR-PARSE-013``);
* ``spread``    -- 18,000 unknown members spread over 20 objects of 900 (under the member
  limit): validated, issues capped (``FHIR-PARSE-014``);
* ``array``     -- a 2 MB array of notes past the array limit (``FHIR-PARSE-013``);
* ``xml``       -- the flat case as FHIR XML: unknown elements, issues capped.

Reported: status, ms, bytes, issues and the ratio to ``valid``. Target (issue 12): every
hostile case is a 4xx OperationOutcome in under 1 s (before the limits, 2 MB took ≈ 9 s).

Usage::

    python bench/bench_fhir_hostile.py               # 2 MB, 5 repeats
    python bench/bench_fhir_hostile.py --megabytes 13 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def cases(megabytes: float) -> dict[str, tuple[bytes, str]]:
    base = json.loads((ROOT / "fixtures" / "fhir" / "resources" / "careplan-ecm.json")
                      .read_text())
    size = int(megabytes * 1024 * 1024)
    keys = size // 14
    flat = dict(base, **{f"x{i:09d}": 1 for i in range(keys)})
    spread = dict(base, note=[{"text": "x", **{f"y{i:03d}": 1 for i in range(900)}}
                              for _ in range(min(20, max(1, keys // 900)))])  # under the caps
    array = dict(base, note=[{"text": "x"} for _ in range(size // 14)])
    xml = ['<CarePlan xmlns="http://hl7.org/fhir"><status value="active"/>'
           '<intent value="plan"/>']
    xml += [f'<x{i:08d} value="1"/>' for i in range(size // 22)]
    xml.append("</CarePlan>")
    json_media = "application/fhir+json"
    return {"valid": (json.dumps(base).encode(), json_media),
            "flat": (json.dumps(flat).encode(), json_media),
            "spread": (json.dumps(spread).encode(), json_media),
            "array": (json.dumps(array).encode(), json_media),
            "xml": ("".join(xml).encode(), "application/fhir+xml")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from conftest import demo_gateway
    from fastapi.testclient import TestClient

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as folder:
        app, auth = demo_gateway(Path(folder))
        with TestClient(app, raise_server_exceptions=False) as client:
            reference = None
            for name, (body, media) in cases(args.megabytes).items():
                times, status, issues = [], 0, 0
                for n in range(args.repeat):
                    payload = body if name != "valid" else body.replace(
                        b'"status"', f'"id": "r{n}", "status"'.encode(), 1)
                    started = time.perf_counter()
                    answer = client.post("/fhir/CarePlan", content=payload,
                                         headers={**auth["harbor"], "Content-Type": media,
                                                  "Accept": "application/fhir+json"})
                    times.append(time.perf_counter() - started)
                    status = answer.status_code
                    data = answer.json()
                    issues = len(data.get("issue", [])) if data.get(
                        "resourceType") == "OperationOutcome" else 0
                median = statistics.median(times)
                reference = reference or median
                rows.append((name, status, median * 1000, len(body), issues,
                             median / reference))
    print(f"{'case':<8} {'status':>6} {'ms':>9} {'bytes':>10} {'issues':>7} {'ratio':>7}")
    for name, status, ms, size, issues, ratio in rows:
        print(f"{name:<8} {status:>6} {ms:>9.1f} {size:>10} {issues:>7} {ratio:>7.1f}")
    slow = [r[0] for r in rows[1:] if r[2] >= 1000 or not 400 <= r[1] < 500]
    print("target: every hostile case a 4xx in < 1000 ms:", "met" if not slow else
          f"MISSED ({', '.join(slow)})")
    return 0 if not slow else 1


if __name__ == "__main__":
    sys.exit(main())
