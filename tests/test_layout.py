"""Units that fit a screen (no function over 120 lines, no module over 500 lines in engine/ and
visionclip_app/), and imports that flow one way: the engine never imports the app, and no engine
module imports the command line's top (engine/cli.py), which imports the subcommands."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "visionclip_app")
MAX_FUNCTION_LINES = 120
MAX_MODULE_LINES = 500
# Known exceptions, each owned by work in progress elsewhere: "path" or "path::function".
ALLOWED: set[str] = set()


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name


def too_long(paths) -> list[str]:
    """The modules and functions of ``paths`` over the limits, not in ``ALLOWED``."""
    found = []
    for path in paths:
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES and _name(path) not in ALLOWED:
            found.append(f"{_name(path)}: {lines} lines (module limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{_name(path)}::{node.name}" not in ALLOWED:
                    found.append(f"{_name(path)}::{node.name}: {length} lines (function limit {MAX_FUNCTION_LINES})")
    return found


def imported_modules(path: Path) -> set[str]:
    """Absolute names of what ``path`` (a module under REPO) imports, relative imports resolved."""
    parts = path.relative_to(REPO).with_suffix("").parts
    here = parts[:-1]  # the package the module is in
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(here[:len(here) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def test_modules_and_functions_fit_a_screen():
    found = too_long(sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py")))
    assert not found, "split these units:\n" + "\n".join(found)


def test_the_check_finds_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # 121 lines with the def
    (tmp_path / "long_function.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "long_module.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "fine.py").write_text(f"def fine():\n{body[:body.rindex(chr(10))]}\n")
    assert too_long(sorted(tmp_path.glob("*.py"))) == [
        "long_function.py::long: 121 lines (function limit 120)", "long_module.py: 501 lines (module limit 500)"]


def test_imports_flow_one_way():
    wrong = []
    for path in sorted((REPO / "engine").rglob("*.py")):
        names = imported_modules(path)
        if any(n == "visionclip_app" or n.startswith("visionclip_app.") for n in names):
            wrong.append(f"{_name(path)} imports the app")
        if path != REPO / "engine" / "cli.py" and ("engine.cli" in names or "engine.cli.main" in names):
            wrong.append(f"{_name(path)} imports engine/cli.py, which imports the subcommands")
    assert not wrong, "\n".join(wrong)
