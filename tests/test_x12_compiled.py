"""The compiled X12 hot path (setup.py + gateway/x12/_accelerate.py): the same findings as the
pure-Python modules it is compiled from, used only while it matches its source."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.x12 import _accelerate

ROOT = Path(__file__).resolve().parent.parent

# validates a few hundred defective files and prints, as JSON, which modules ran compiled and
# every finding and claim verdict
SCRIPT = r"""
import json, random, sys
sys.path[:0] = ["tests", "bench"]
from x12_mutants import mutants, _join, _mutate, _segments
from synth837 import write_file
from gateway.x12 import _accelerate
from gateway.x12.validate import validate_x12

def sig(result):
    return ([[f.rule, f.location, f.message, f.segment, f.severity.value,
              sorted((f.context or {}).items())] for f in result.findings],
            [[c.start, c.end, c.problem] for c in result.claims])

out = [sig(validate_x12(data)) for _, data in mutants(31, 150)]
write_file(sys.argv[1], 150, seed=5)
segs = _segments(open(sys.argv[1]).read())[0]
rng = random.Random(31)
for n in range(40):
    copy = list(segs)
    for _ in range(rng.choice([1, 4, 15])):
        _mutate(rng, copy)
    out.append(sig(validate_x12(_join(copy))))
print(json.dumps({"compiled": {m: _accelerate.compiled(m) for m in _accelerate.MODULES},
                  "results": out}, default=str))
"""


def run(tmp_path: Path, pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != _accelerate.PURE_ENV}
    if pure:
        env[_accelerate.PURE_ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "synth.x12")],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return json.loads(proc.stdout)


def built() -> dict[str, str]:
    try:
        return json.loads(_accelerate.MANIFEST.read_text(encoding="utf-8"))
    except OSError:
        return {}


def test_compiled_and_pure_python_find_the_same(tmp_path):
    compiled = run(tmp_path, pure=False)
    pure = run(tmp_path, pure=True)
    assert not any(pure["compiled"].values()), pure["compiled"]
    current = {m for m, digest in built().items()
               if digest == _accelerate.source_digest(ROOT / Path(*m.split(".")).with_suffix(".py"))}
    # every module compiled from its current source runs compiled (make install-dev builds
    # them; on a machine without a C compiler nothing is built and both runs are pure)
    assert {m for m, on in compiled["compiled"].items() if on} == current
    assert compiled["results"] == pure["results"]


def test_an_extension_older_than_its_source_is_not_used(monkeypatch):
    finder = _accelerate._PureWhenStale()
    name = "gateway.x12.engine.walker"
    spec = importlib.machinery.PathFinder.find_spec(
        name, [str(ROOT / "gateway" / "x12" / "engine")])
    if not spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        pytest.skip("the X12 hot path is not compiled here (no extension to judge)")
    path = [str(ROOT / "gateway" / "x12" / "engine")]
    source = ROOT / "gateway" / "x12" / "engine" / "walker.py"
    monkeypatch.setattr(_accelerate, "_pure", lambda: False)
    monkeypatch.setattr(_accelerate, "_manifest", {name: _accelerate.source_digest(source)})
    assert finder.find_spec(name, path) is None  # current: the ordinary import loads the .so
    monkeypatch.setattr(_accelerate, "_manifest", {name: "an older source"})
    assert finder.find_spec(name, path).origin == str(source)
    monkeypatch.setattr(_accelerate, "_manifest", {name: _accelerate.source_digest(source)})
    monkeypatch.setattr(_accelerate, "_pure", lambda: True)  # the x12_pure setting
    assert finder.find_spec(name, path).origin == str(source)
    assert finder.find_spec("gateway.x12.acks", [str(ROOT / "gateway" / "x12")]) is None


def test_setup_compiles_the_modules_accelerate_lists():
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert '_accelerate.py"' in text and 'ACCELERATE["MODULES"]' in text
    for name in _accelerate.MODULES:
        assert (ROOT / Path(*name.split(".")).with_suffix(".py")).exists(), name


def test_a_module_runs_pure_while_a_module_it_cimports_from_is_stale(monkeypatch):
    """validator.pxd cimports reader.Segment: a compiled validator beside a pure-Python reader
    (its source edited since the build) would not get the extension type it was built
    against, so it runs from its .py too."""
    name = "gateway.x12.engine.validator"
    assert "gateway.x12.reader" in _accelerate.CIMPORTS[name]
    folder = ROOT / "gateway" / "x12" / "engine"
    spec = importlib.machinery.PathFinder.find_spec(name, [str(folder)])
    if not spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        pytest.skip("the X12 hot path is not compiled here (no extension to judge)")
    finder = _accelerate._PureWhenStale()
    digests = {m: _accelerate.source_digest(ROOT / Path(*m.split(".")).with_suffix(".py"))
               for m in _accelerate.MODULES}
    monkeypatch.setattr(_accelerate, "_pure", lambda: False)
    monkeypatch.setattr(_accelerate, "_manifest", digests)
    assert finder.find_spec(name, [str(folder)]) is None  # all current: the extension
    monkeypatch.setattr(_accelerate, "_manifest", {**digests, "gateway.x12.reader": "older"})
    assert finder.find_spec(name, [str(folder)]).origin == str(folder / "validator.py")
    assert finder.find_spec("gateway.x12.engine.walker", [str(folder)]) is None  # no cimport


def test_a_declarations_file_is_part_of_the_source_digest(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("x = 1\n", encoding="utf-8")
    alone = _accelerate.source_digest(source)
    (tmp_path / "mod.pxd").write_text("cdef int y\n", encoding="utf-8")
    assert _accelerate.source_digest(source) != alone
