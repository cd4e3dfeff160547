"""The ECM rule engine compiled with Cython (gateway/x12/_accelerate.py lists gateway.ecm.rules
and gateway.ecm.pof): the same findings as the pure-Python modules it is compiled from, over the
generated file of tests/test_ecm_fast_path.py with every audience and presumptive arrangement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.x12 import _accelerate

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path[:0] = ["tests"]
from test_ecm_fast_path import NPIS, write_generated
from gateway.ecm.rules import EncounterRules, Presumptive
from gateway.x12 import _accelerate
from gateway.x12.validate import validate_x12

path, registry = write_generated(Path(sys.argv[1]), 14)
out = []
for options in ({}, {"audience": "submitter"},
                {"audience": "submitter", "submitter": ((NPIS[0], NPIS[3]), ("940000003",))},
                {"presumptive": Presumptive(frozenset({NPIS[1], NPIS[4]}), 20)}):
    result = validate_x12(str(path), rules=EncounterRules(registry, **options))
    out.append([[f.rule, f.location, f.message, f.segment, f.severity.value, f.plan_rule,
                 f.plan_message] for f in result.findings])
print(json.dumps({"compiled": {m: _accelerate.compiled(m)
                               for m in ("gateway.ecm.rules", "gateway.ecm.pof")},
                  "results": out}))
"""


def run(folder: Path, pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != _accelerate.PURE_ENV}
    env["ECM_GATEWAY_RULES_PIPELINE_BYTES"] = "0"  # (the rules in the process that is judged)
    if pure:
        env[_accelerate.PURE_ENV] = "1"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True,
                          text=True, cwd=ROOT, env=env, check=True)
    return json.loads(proc.stdout)


def test_compiled_and_pure_rules_find_the_same(tmp_path):
    assert {"gateway.ecm.rules", "gateway.ecm.pof"} <= set(_accelerate.MODULES)
    compiled = run(tmp_path / "compiled", pure=False)
    pure = run(tmp_path / "pure", pure=True)
    assert not any(pure["compiled"].values())
    built = json.loads(_accelerate.MANIFEST.read_text(encoding="utf-8")) \
        if _accelerate.MANIFEST.exists() else {}
    for name, on in compiled["compiled"].items():  # compiled wherever a current build exists
        source = ROOT / Path(*name.split(".")).with_suffix(".py")
        assert on == (built.get(name) == _accelerate.source_digest(source)), name
    assert compiled["results"] == pure["results"]
    assert sum(len(findings) for findings in compiled["results"]) > 1000
