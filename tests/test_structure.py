"""The layout issue 10 asks for, checked on the source: format packages (x12, fhir, tabular,
invoice, state) import nothing from the pipeline or the API; no import cycle among gateway's
modules (every import counted, also those inside functions); the environment is read only by
the settings; one status enum; one sender check, one plan resolution, one counter store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
FORMAT_PACKAGES = ("x12", "fhir", "tabular", "invoice", "state")


def _module(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module(p): p for p in GATEWAY.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_format_packages_import_nothing_from_pipeline_or_api():
    graph = _imports()
    wrong = sorted((m, t) for m, targets in graph.items() for t in targets
                   if m.split(".")[1:2] and m.split(".")[1] in FORMAT_PACKAGES
                   and t.startswith(("gateway.pipeline", "gateway.api", "gateway.cli")))
    assert wrong == []


def test_no_import_cycle_in_gateway():
    graph = _imports()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def _grep(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return sorted(f"{p.relative_to(GATEWAY.parent)}:{n}" for p in GATEWAY.rglob("*.py")
                  for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                  if rx.search(line))


def _files(pattern: str) -> list[str]:
    return [hit.split(":")[0] for hit in _grep(pattern)]


def test_only_the_settings_read_the_environment():
    # (the worker and `serve --api-workers` hand the settings to their child processes
    # through the environment: assignments only)
    assert sorted(set(_files(r"os\.environ(?!\[[^\]]+\] =)|os\.getenv"))) == \
        ["gateway/settings.py"]


def test_one_of_each_decision():
    assert _files(r"^class \w*Status\w*\((Str)?Enum") == ["gateway/pipeline/status.py"]
    assert _files(r"^STATUSES\b.*= ") == ["gateway/pipeline/status.py"]
    assert _files(r"^def authorise_sender\(") == ["gateway/pipeline/delivery.py"]
    assert _files(r"^def resolve_plan\(") == ["gateway/pipeline/delivery.py"]
    # (the class is made on first use, inside gateway.settings: see its docstring)
    assert _files(r"^\s*class Settings\(") == ["gateway/settings.py"]
    assert _files(r"BaseSettings\)") == ["gateway/settings.py"]
    assert sorted(set(_files(r"def _take_numbers\(|CREATE TABLE IF NOT EXISTS counters|"
                             r"control_counters = Table"))) == ["gateway/pipeline/store.py"]
    # no step decides who may send: every sender check goes through the delivery module
    assert [h for h in _grep(r"in (self\.)?(partner|provider)\.(npis|tins)\b")
            # (partners.provider_for finds the provider partner an NPI names: a route, not a check)
            if not h.startswith(("gateway/pipeline/delivery.py",
                                 "gateway/pipeline/partners.py"))] == []
