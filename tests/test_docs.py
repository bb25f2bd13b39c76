"""docs/architecture.md says only true things: every file, module and symbol it names exists.

Each `code span` of the document is read as what it looks like: a path (``runs/engine/states.py``,
``backends/<kind>/``), a dotted module path (``runs.engine.tick``, ``runs.notify.outbox.enqueue``),
a path with a symbol (``runs/engine/fair_share.py:owner_room``) or a symbol (``move()``,
``Run.is_settled``, ``SubmitResult``). Spans that are none of these (SQL, config keys, state
names) are left alone.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runs", "backends", "sources", "scripthut_site", "tests", "bench")

CODE_SPAN = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"^(?:" + "|".join(PACKAGES) + r"|templates|docs|cloudformation)/[\w/.<>-]*$")
DOTTED = re.compile(r"^(?:" + "|".join(PACKAGES) + r")(?:\.\w+)+$")
PATH_SYMBOL = re.compile(r"^([\w/]+\.py):(\w+)$")
SQL_WORDS = {"VALUES", "UPDATE", "SELECT", "INSERT", "COPY", "WHERE", "IN", "RETURNING", "CASE", "BEGIN", "COMMIT"}
SYMBOL = re.compile(r"^([A-Z]\w*)(?:\.(\w+))?(?:\(\))?$|^([a-z_]\w*)\(\)$")


@cache
def defined_names() -> dict[str, set[str]]:
    """Every class, function, method and assigned name in the project, with the names
    defined inside each class (its methods, fields and properties)."""
    names: dict[str, set[str]] = {"": set()}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    members = names.setdefault(node.name, set())
                    for item in node.body:
                        members.update(_names_of(item))
                names[""].update(_names_of(node))
    return names


def _names_of(node: ast.AST) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def problem(span: str, *, symbols: bool = True) -> str | None:
    """What is wrong with one code span of the docs, or None. Without ``symbols`` only
    paths and module paths are checked (the README also names settings and config keys)."""
    if PATH.match(span):
        return None if (ROOT / span.replace("<kind>", "slurm")).exists() else f"no file {span}"
    if DOTTED.match(span):
        return None if _resolves(span) else f"{span} does not import"
    if match := PATH_SYMBOL.match(span):
        source = ROOT / match[1]
        return None if source.exists() and match[2] in _file_names(source) else f"no {match[2]} in {match[1]}"
    if symbols and span not in SQL_WORDS and (match := SYMBOL.match(span)):
        cls, member, function = match[1], match[2], match[3]
        names = defined_names()
        if function:
            return None if function in names[""] else f"no function {function}"
        if cls not in names:
            return None if cls in names[""] else f"no class {cls}"  # a module-level constant such as ACTIVE
        inherited = {"pk", "objects", "id"}  # every Django model has them
        return None if member is None or member in names[cls] | inherited else f"no {member} on {cls}"
    return None


def _file_names(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        found |= _names_of(node)
    return found


def test_every_name_in_the_architecture_doc_exists() -> None:
    assert problems_in(ROOT / "docs" / "architecture.md") == []


def test_every_file_and_module_the_readme_names_exists() -> None:
    assert problems_in(ROOT / "README.md", symbols=False) == []


def problems_in(doc: Path, *, symbols: bool = True) -> list[str]:
    return sorted({p for span in CODE_SPAN.findall(doc.read_text()) if (p := problem(span.strip(), symbols=symbols))})


def test_the_checker_catches_what_does_not_exist() -> None:
    assert problem("runs/engine/states.py") is None
    assert problem("runs/engine/nowhere.py") == "no file runs/engine/nowhere.py"
    assert problem("runs.engine.tick") is None
    assert problem("runs.engine.no_such_module") == "runs.engine.no_such_module does not import"
    assert problem("runs/engine/states.py:TRANSITIONS") is None
    assert problem("runs/engine/states.py:teleport") == "no teleport in runs/engine/states.py"
    assert problem("Run.is_settled") is None
    assert problem("Run.teleport") == "no teleport on Run"
    assert problem("teleport()") == "no function teleport"
    assert problem("pending") is None  # a state name, not a symbol
