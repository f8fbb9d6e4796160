"""The folders are the layers: each package imports only the layers below it.

    reactor/                      the event loop: imports nothing of ours
    ext/                          shared memory and native codecs: nothing of ours either
    processes/shared/             what every process uses: reactor/, ext/
    processes/<process>/          one process each: shared/ and itself, never another process
    processes/supervisor/         main.py's side: shared/, and the strategy loader (it checks
                                  every strategy's class and params before anything starts)
    processes/tools/              operator tools: shared/ and the supervisor's summary
    examples/                     user strategies: the Strategy API alone

A process package never imports another one: they talk only through sockets and shared memory.
The supervisor starts each process by its module path (supervisor/stack.py ENTRY), a name, not
an import. main.py, scripts/ and bench/ sit on top of everything and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ("gateway", "orderbook", "strategy", "order_manager")

ALLOWED: dict[str, tuple[str, ...]] = {
    "reactor": ("reactor",),
    "ext": ("ext",),
    "processes.shared": ("reactor", "ext", "processes.shared"),
    **{f"processes.{p}": ("reactor", "ext", "processes.shared", f"processes.{p}")
       for p in PROCESSES},
    "processes.supervisor": ("reactor", "ext", "processes.shared", "processes.supervisor",
                             "processes.strategy.loader", "processes.strategy.api"),
    "processes.tools": ("reactor", "ext", "processes.shared", "processes.tools",
                        "processes.supervisor.summary"),
    "examples": ("examples", "processes.strategy.api"),
}
OURS = ("reactor", "ext", "processes", "examples")


def _layer(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2]) if parts[0] == "processes" else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of one of our packages in the file, wherever it stands
    (a function-level import is still a dependency); relative imports are resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(ROOT).parent.parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            # `from processes.shared import config` depends on processes.shared.config.
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, mod) for line, mod in out if mod.split(".")[0] in OURS]


def _sources() -> list[Path]:
    files = [p for d in ("reactor", "ext", "processes", "examples")
             for p in (ROOT / d).rglob("*.py")]
    return sorted(p for p in files if p.name != "__init__.py" or p.parent.name != "processes")


@pytest.mark.timeout(30)
def test_every_layer_imports_only_the_layers_below_it():
    broken = []
    for path in _sources():
        layer = _layer(path)
        allowed = ALLOWED.get(layer)
        assert allowed is not None, f"{path}: no layer rule for {layer}"
        for line, mod in _imports(path):
            if not any(mod == a or mod.startswith(a + ".") for a in allowed):
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not broken, "\n".join(broken)


@pytest.mark.timeout(30)
def test_the_rule_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The check itself: a process importing another process is reported."""
    fake = ROOT / "processes" / "gateway" / "_layer_probe.py"
    monkeypatch.setattr("test_layers._sources", lambda: [fake])
    original = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self == fake:
            return "from ..order_manager import service\n"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(AssertionError, match="imports processes.order_manager.service"):
        test_every_layer_imports_only_the_layers_below_it()
