"""The import layering of recoverctl/, read from the source with `ast` (docs/design.md, "Layers").

Every import counts: module level, inside functions, `from x import y`, relative imports. A
lower layer never imports a higher one, the top-level units of the package form no import cycle,
and nothing outside recoverctl/catalog/ reads the catalog's tables module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import recoverctl

PACKAGE = Path(recoverctl.__file__).resolve().parent
ROOT = PACKAGE.parent

# Rank of each top-level unit of recoverctl/ (package or module); a unit may import only units of
# a lower rank, or of its own rank as long as no cycle forms. Keep in step with docs/design.md.
RANKS: dict[str, int] = {
    "__main__": 6,
    "cli": 6,
    "service": 6,
    "actions": 5,
    "drill": 4,
    "appdb": 4,
    "scheduler": 4,
    "incidents": 4,
    "sources": 3,
    "console": 3,
    "alerting": 3,
    "deploy": 3,
    "notify": 3,
    "recorder": 3,
    "catalog": 2,
    "repo": 2,
    "storage": 1,
    "config": 0,
    "logs": 0,
    "cron": -1,
    "errors": -1,
    "interrupts": -1,
    "progress": -1,
    "units": -2,
    "__init__": -2,
}

# The rules issue #14 names, stated on their own so a wrong rank above cannot loosen them.
_BELOW_ACTIONS = (
    *("sources", "repo", "storage", "notify", "deploy", "catalog", "config", "errors"),
    *("drill", "appdb", "scheduler", "alerting", "incidents"),
)
NEVER: dict[str, frozenset[str]] = {
    **dict.fromkeys(_BELOW_ACTIONS, frozenset({"actions", "cli", "service"})),
    "actions": frozenset({"cli", "service"}),
}

TABLES = "recoverctl.catalog.tables"


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    source: str  # top-level unit of the importing file
    target: str  # imported module, dotted, starting with "recoverctl"

    @property
    def unit(self) -> str:
        parts = self.target.split(".")
        return parts[1] if len(parts) > 1 else "__init__"

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.target}"


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def imports(rel: str, text: str) -> Iterator[Import]:
    """Yield every import of a recoverctl module in the file `rel` (path from the repository
    root) holding `text`, wherever in the file it stands."""
    parts = rel.removesuffix(".py").split("/")
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    unit = parts[1] if len(parts) > 1 else "__init__"
    for node in ast.walk(ast.parse(text, filename=rel)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            subs = [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")]
            targets = subs or [module]
        for target in targets:
            if target == "recoverctl" or target.startswith("recoverctl."):
                yield Import(rel, node.lineno, unit, target)


def all_imports() -> list[Import]:
    return [
        i
        for path in sorted(PACKAGE.rglob("*.py"))
        for i in imports(path.relative_to(ROOT).as_posix(), path.read_text())
    ]


def _upward(i: Import) -> bool:
    if i.unit == i.source:
        return False
    return i.unit in NEVER.get(i.source, frozenset()) or RANKS[i.unit] > RANKS[i.source]


def test_every_unit_has_a_rank() -> None:
    units = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert units <= RANKS.keys(), (
        f"give these a rank in RANKS and docs/design.md: {sorted(units - RANKS.keys())}"
    )


def test_parser_sees_every_kind_of_import() -> None:
    # The checker must not be dodged by an import inside a function or a relative one.
    src = (
        "import recoverctl.cli.main\n"
        "from recoverctl.catalog import Catalog, tables\n"
        "def f() -> None:\n"
        "    from ..actions import drill\n"
        "    from . import checks\n"
        "    from .scoring import score\n"
    )
    got = [(i.line, i.source, i.target) for i in imports("recoverctl/drill/probe.py", src)]
    assert sorted(got) == [
        (1, "drill", "recoverctl.cli.main"),
        (2, "drill", "recoverctl.catalog.tables"),
        (4, "drill", "recoverctl.actions.drill"),
        (5, "drill", "recoverctl.drill.checks"),
        (6, "drill", "recoverctl.drill.scoring"),
    ]
    inits = [i.target for i in imports("recoverctl/sources/__init__.py", "from . import files\n")]
    assert inits == ["recoverctl.sources.files"]


def test_lower_layers_never_import_higher_ones() -> None:
    found = [str(i) for i in all_imports() if _upward(i)]
    assert not found, "imports up the layers (docs/design.md, Layers):\n" + "\n".join(found)


def test_no_import_cycle_between_units() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in all_imports():
        if i.unit != i.source:
            graph[i.source].add(i.unit)

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reachable = {unit: reach(unit) for unit in list(graph)}
    tangles = {frozenset({u, *(v for v in reachable[u] if u in reachable.get(v, ()))}) for u in reachable}
    cycles = sorted(sorted(t) for t in tangles if len(t) > 1)
    assert not cycles, "units that import each other (directly or round about):\n" + "\n".join(
        f"{' <-> '.join(c)}: " + ", ".join(f"{u}->{v}" for u in c for v in sorted(graph[u]) if v in c)
        for c in cycles
    )


def test_only_the_catalog_reads_its_tables() -> None:
    found = [
        str(i) for i in all_imports() if i.target == TABLES and not i.file.startswith("recoverctl/catalog/")
    ]
    assert not found, "use the catalog's API instead of its tables:\n" + "\n".join(found)


def test_restore_command_entry_point_named_by_path_exists() -> None:
    # sources/ names the cli/ entry point by its path instead of importing it; the path must hold.
    from recoverctl.sources.postgres.archiving import fetch_argv

    entry = Path(fetch_argv()[-1])
    assert entry.is_file() and entry == PACKAGE / "cli" / "wal_fetch_entry.py"


def test_wal_fetcher_entry_point_named_by_module_exists() -> None:
    # The WAL fetcher process runs the cli/ entry point that sources/ names by module path.
    from recoverctl.sources.postgres.fetchspool import FETCHER_MODULE, fetcher_argv

    assert fetcher_argv("main", "/tmp/spool", None)[1:3] == ["-m", FETCHER_MODULE]
    assert (ROOT / (FETCHER_MODULE.replace(".", "/") + ".py")).is_file()


def test_postgresql_mechanics_stay_in_sources() -> None:
    # Use cases orchestrate; talking to a PostgreSQL server (psycopg) is sources/postgres/'s job.
    found = []
    for path in sorted((PACKAGE / "actions").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "psycopg" or n.startswith("psycopg.") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "move the PostgreSQL work into sources/postgres/:\n" + "\n".join(found)


def test_unit_tests_mirror_the_package() -> None:
    """tests/unit/<dir>/ holds the tests of recoverctl/<dir>/: a folder there names a package here."""
    unit = Path(__file__).resolve().parent
    strays = [
        d.name
        for d in unit.iterdir()
        if d.is_dir() and d.name != "__pycache__" and not (PACKAGE / d.name / "__init__.py").is_file()
    ]
    assert not strays, f"tests/unit folders without a recoverctl package of that name: {strays}"
