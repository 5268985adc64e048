"""The emulator's modules import one another in layers, never in a circle: the wire checks and
the call leg below the provider modules, the runner above them."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import bridge.emulator

PACKAGE = "bridge.emulator"


def emulator_imports() -> dict[str, set[str]]:
    """Each module of the package (by its short name) and the package's modules it imports,
    wherever in the module the import is (a function-level import closes a circle too)."""
    folder = Path(bridge.emulator.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported |= {
                name.removeprefix(f"{PACKAGE}.") for name in names if name.startswith(PACKAGE)
            }
        graph[path.stem] = imported
    return graph


def test_no_import_circle() -> None:
    try:
        order = list(TopologicalSorter(emulator_imports()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
    assert order.index("wire") < order.index("call") < order.index("twilio_wire")
    assert order.index("plivo_wire") < order.index("runner") < order.index("cli")


def test_provider_modules_build_on_the_shared_ones_only() -> None:
    graph = emulator_imports()
    for provider in ("twilio_wire", "plivo_wire"):
        assert graph[provider] == {"wire", "call"}, provider
