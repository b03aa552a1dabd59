"""The import rule of the README's layout section, checked on every import statement (also the
ones inside functions).

Inside ``streams/``::

    contracts  <-  runtime, kafka, influx  <-  scoring, aggregation, notify  <-  app  <-  cli, tools

Between the top-level folders: ``models/`` and ``export/`` may import ``streams.contracts`` and
``streams.runtime`` (``export/`` also ``models/``), never the reverse; product code never imports
``scripts/``, ``bench/`` or ``tests/``; no module imports another package's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("streams", "models", "export", "dashboards", "scripts", "bench", "tests")

#: streams sub-package -> the streams sub-packages it may import (besides itself)
STREAMS_ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "runtime": set(),
    "kafka": {"contracts"},
    "influx": {"contracts"},
    "scoring": {"contracts", "runtime", "kafka", "influx"},
    "aggregation": {"contracts", "runtime", "kafka", "influx"},
    "notify": {"contracts", "runtime", "kafka", "influx"},
    "app": {"contracts", "runtime", "kafka", "influx", "scoring", "aggregation", "notify"},
    "cli": {"contracts", "runtime", "kafka", "influx", "scoring", "aggregation", "notify", "app", "tools"},
    "tools": {"contracts", "runtime", "kafka", "influx", "scoring", "aggregation", "notify", "app"},
}
#: top-level folder -> what of the project it may import
TOP_ALLOWED: dict[str, set[str]] = {
    "models": {"models", "streams.contracts", "streams.runtime"},
    "export": {"export", "models", "streams.contracts", "streams.runtime"},
    "dashboards": {"dashboards"},
}


def _unit(module: str) -> str:
    """``streams.kafka.consumer`` -> ``kafka``; ``streams.app`` -> ``app``; ``models.train`` -> ``models``."""
    parts = module.split(".")
    if parts[0] == "streams":
        return parts[1] if len(parts) > 1 else "streams"
    return parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, source: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import statement of ``source`` (the text of ``path``)."""
    tree = ast.parse(source, str(path))
    out = []
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            names = [alias.name for alias in node.names]
            out.append((node.lineno, module, names))
            # `from streams import kafka` imports the sub-package kafka
            if module in PROJECT:
                out += [(node.lineno, f"{module}.{name}", []) for name in names]
    return out


def _files() -> list[Path]:
    return sorted(p for top in ("streams", "models", "export", "dashboards") for p in (ROOT / top).rglob("*.py"))


def violations(sources: dict[Path, str] | None = None) -> list[str]:
    """Every import that breaks the rule, in ``sources`` (path -> text; default: the project's files)."""
    found = []
    sources = sources if sources is not None else {p: p.read_text() for p in _files()}
    for path, source in sources.items():
        importer = _module_name(path)
        top = importer.split(".")[0]
        for line, module, names in _imports(path, source):
            target_top = module.split(".")[0]
            if target_top not in PROJECT:
                continue  # third-party or standard library
            where = f"{path.relative_to(ROOT)}:{line}: {importer} imports {module}"
            if target_top in ("scripts", "bench", "tests"):
                found.append(f"{where} (product code never imports {target_top}/)")
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private and _unit(module) != _unit(importer):
                found.append(f"{where}: private name(s) {', '.join(private)} of another package")
            if top == "streams":
                if target_top != "streams":
                    found.append(f"{where} (streams/ never imports {target_top}/)")
                    continue
                source, target = _unit(importer), _unit(module)
                if target not in ("streams", source) and target not in STREAMS_ALLOWED.get(source, set()):
                    found.append(f"{where} ({source} may import only {sorted(STREAMS_ALLOWED[source]) or 'itself'})")
            else:
                allowed = TOP_ALLOWED[top]
                if not any(module == a or module.startswith(a + ".") for a in allowed) and module != "streams":
                    found.append(f"{where} ({top}/ may import only {sorted(allowed)})")
    return found


def test_imports_point_one_way():
    assert violations() == []


@pytest.mark.parametrize("importer, statement", [
    ("streams/runtime/model.py", "from streams.contracts.labels import LABELS"),  # runtime imports nothing else
    ("streams/contracts/records.py", "from streams.kafka.delivery import deliver"),  # contracts at the bottom
    ("streams/scoring/agent.py", "from streams.tools.samples import sample_items"),  # the worker never imports tools
    ("streams/influx/sink.py", "from streams.scoring.scorer import BatchScorer"),  # no upward import
    ("streams/app.py", "from scripts.probe_broker import main"),  # product code never imports scripts
    ("streams/cli.py", "from models.train import main"),  # serving never imports training
    ("models/evaluate.py", "from streams.scoring.scorer import BatchScorer"),  # models: runtime/contracts only
    ("export/onnx_export.py", "from streams.kafka.consumer import SafeCommitApp"),
    ("streams/tools/demo.py", "from streams.kafka.consumer import _ConsumerThread"),  # private name
])
def test_a_forbidden_import_is_reported(importer, statement):
    path = ROOT / importer
    probe = path.read_text() + f"\n\ndef _probe():\n    {statement}\n"
    found = violations({path: probe})
    assert len(found) == 1 and statement.split()[1] in found[0], found
