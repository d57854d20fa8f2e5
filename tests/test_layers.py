"""The layer rule of docs/architecture.md: every module imports only from its own floor
or below (type-only and function-local imports too), and every module is on a floor."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\| (\d+) \| (.+) \|$")


def floors() -> dict[str, int]:
    """Module name -> floor, from the table under "The layer rule"."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### The layer rule", 1)[1].split("\n#", 1)[0]
    table: dict[str, int] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        for name in re.findall(r"`([A-Za-z0-9_.]+)`", match.group(2)):
            full = name if name.startswith("ilp_receiver") else f"ilp_receiver.{name}"
            table[full] = int(match.group(1))
    return table


def floor_of(module: str, table: dict[str, int]) -> int | None:
    """The floor of the longest name in ``table`` that is ``module`` or a package of it."""
    best: tuple[int, int] | None = None
    for name, floor in table.items():
        inside = module == name or module.startswith(name + ".")
        if inside and (best is None or len(name) > best[0]):
            best = (len(name), floor)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "integrations":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool) -> list[tuple[int, list[str]]]:
    """(line, modules) for every import statement in ``source`` -- ``from x import y``
    names both ``x`` and ``x.y`` (``y`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.append((node.lineno, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, [target, *(f"{target}.{a.name}" for a in node.names)]))
    return found


def upward_imports(
    source: str, module: str, is_package: bool, table: dict[str, int]
) -> list[tuple[int, str]]:
    """(line, the highest module it reaches) for each import statement of ``source``
    that reaches above the module's floor."""
    own = floor_of(module, table)
    assert own is not None, f"{module} is on no floor of docs/architecture.md"
    upward: list[tuple[int, str]] = []
    for line, targets in imported(source, module, is_package):
        placed = [(f, t) for t in targets if (f := floor_of(t, table)) is not None]
        if placed and max(placed)[0] > own:
            upward.append((line, max(placed)[1]))
    return sorted(upward)


def sources() -> list[Path]:
    return sorted([*ROOT.glob("ilp_receiver/**/*.py"), *ROOT.glob("integrations/**/*.py")])


def test_the_table_is_read() -> None:
    table = floors()
    assert table["ilp_receiver.errors"] == 0
    assert table["ilp_receiver.commands"] == max(table.values())
    assert len(table) >= 30


def test_every_module_is_on_a_floor() -> None:
    table = floors()
    unplaced = [module_name(p) for p in sources() if floor_of(module_name(p), table) is None]
    assert unplaced == []


def module_map() -> str:
    """The code block under "## Layers": the map of every module."""
    text = DOC.read_text(encoding="utf-8")
    return text.split("## Layers", 1)[1].split("```", 2)[1]


def test_the_map_names_every_module() -> None:
    drawn = module_map()
    missing: list[str] = []
    for path in sources():
        parts = path.relative_to(ROOT).with_suffix("").parts
        # a package by its folder, a module by its name (each where the map shows it)
        name = f"{parts[-2]}/" if parts[-1] == "__init__" else parts[-1]
        pattern = re.escape(name) if name.endswith("/") else rf"\b{re.escape(name)}\b"
        if re.search(pattern, drawn) is None:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_no_import_reaches_a_higher_floor() -> None:
    table = floors()
    upward: list[str] = []
    for path in sources():
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        for line, target in upward_imports(source, module, path.name == "__init__.py", table):
            upward.append(
                f"{module}:{line} (floor {floor_of(module, table)}) imports {target} "
                f"(floor {floor_of(target, table)})"
            )
    assert upward == []


#: Modules a sans-I/O core must not import: sockets, event loops, threads, processes,
#: databases and HTTP clients.
IO_MODULES = (
    "asyncio",
    "aiohttp",
    "asyncpg",
    "concurrent",
    "http.client",
    "redis",
    "selectors",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "threading",
    "urllib.request",
)


def sans_io_cores() -> list[str]:
    """The modules named on the "Sans-I/O cores:" line under "The layer rule"."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### The layer rule", 1)[1].split("\n#", 1)[0]
    line = next(row for row in section.splitlines() if row.startswith("Sans-I/O cores:"))
    return [f"ilp_receiver.{name}" for name in re.findall(r"`([A-Za-z0-9_.]+)`", line)]


def io_imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for each import of ``source`` that reaches an I/O module."""
    found: list[tuple[int, str]] = []
    for line, targets in imported(source, module, is_package):
        for target in targets:
            if any(target == io or target.startswith(io + ".") for io in IO_MODULES):
                found.append((line, target))
                break
    return found


def test_sans_io_cores_import_no_io() -> None:
    cores = sans_io_cores()
    assert {"ilp_receiver.codec", "ilp_receiver.btp", "ilp_receiver.stream"} <= set(cores)
    offending: list[str] = []
    for path in sources():
        module = module_name(path)
        if not any(module == core or module.startswith(core + ".") for core in cores):
            continue
        source = path.read_text(encoding="utf-8")
        for line, target in io_imports(source, module, path.name == "__init__.py"):
            offending.append(f"{module}:{line} imports {target}")
    assert offending == []


def test_the_io_check_sees_io_imports() -> None:
    source = (
        "import asyncio\n"
        "from aiohttp import web\n"
        "import json\n"
        "from concurrent.futures import Future\n"
    )
    assert io_imports(source, "ilp_receiver.codec.oer", False) == [
        (1, "asyncio"),
        (2, "aiohttp"),
        (4, "concurrent.futures"),
    ]


def test_the_check_sees_upward_imports_of_every_kind() -> None:
    table = floors()
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .errors import ConfigError\n"  # down: allowed
        "if TYPE_CHECKING:\n"
        "    from .web.service import IlpService\n"
        "def later():\n"
        "    from . import paywall\n"
        "import ilp_receiver_flask\n"
    )
    assert upward_imports(source, "ilp_receiver.receiver", False, table) == [
        (4, "ilp_receiver.web.service.IlpService"),
        (6, "ilp_receiver.paywall"),
        (7, "ilp_receiver_flask"),
    ]
