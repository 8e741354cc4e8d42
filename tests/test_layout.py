"""The package layout rules of the design (Layout): import direction, no star imports,
``__all__`` in every public module, no exact pins in the dependencies."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scdataloader", "bengrn", "scprint")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []


def _qualname(path: Path) -> tuple[str, bool]:
    """Dotted module name of a file, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module imported anywhere in a file (with line numbers),
    relative imports resolved; ``from a import b`` gives both ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name, is_package = _qualname(path)
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.level - 1 > len(package):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top")
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found.extend((f"{module}.{alias.name}", node.lineno) for alias in node.names)
    return found


def _offending(package: str, banned: tuple[str, ...], under: str | None = None) -> list[str]:
    out = []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if under is not None and not rel.startswith(under):
            continue
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in banned:
                out.append(f"{rel}:{line} imports {module}")
    return out


def test_packages_exist():
    assert _modules("scdataloader") and _modules("bengrn") and _modules("scprint")


def test_relative_imports_are_resolved():
    """The resolver itself: relative imports of scdataloader name scdataloader modules."""
    imports = dict(_imports(ROOT / "scdataloader" / "datamodule.py"))
    assert "scdataloader.collator" in imports and "scdataloader.collator.Collator" in imports


def test_scdataloader_and_bengrn_do_not_import_scprint():
    assert _offending("scdataloader", ("scprint",)) == []
    assert _offending("bengrn", ("scprint",)) == []


def test_scdataloader_does_not_import_bengrn():
    assert _offending("scdataloader", ("bengrn",)) == []


def test_scprint_nn_is_pure_torch():
    if not (ROOT / "scprint" / "nn").is_dir():
        pytest.skip("scprint/nn does not exist yet")
    banned = ("lightning", "pytorch_lightning", "anndata")
    assert _offending("scprint", banned, under="scprint/nn/") == []


def test_no_star_imports():
    stars = []
    for package in PACKAGES:
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                    stars.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert stars == []


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    names.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return names


def _all_value(tree: ast.Module) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                return node.value
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == "__all__":
                return node.value
    return None


def test_public_scdataloader_modules_define_all():
    missing, undefined = [], []
    for path in _modules("scdataloader"):
        rel = path.relative_to(ROOT).as_posix()
        if any(part.startswith("_") and part != "__init__.py" for part in path.parts[-2:]):
            continue  # private module
        tree = ast.parse(path.read_text())
        value = _all_value(tree)
        if value is None:
            missing.append(rel)
            continue
        if isinstance(value, ast.List | ast.Tuple):  # a literal: every name is defined
            defined = _top_level_names(tree)
            for elt in value.elts:
                assert isinstance(elt, ast.Constant) and isinstance(elt.value, str), rel
                if elt.value not in defined:
                    undefined.append(f"{rel}: {elt.value}")
    assert missing == []
    assert undefined == []


def test_every_exported_name_resolves():
    import scdataloader

    assert scdataloader.__all__
    unresolved = []
    for name in scdataloader.__all__:
        try:
            getattr(scdataloader, name)
        except AttributeError as e:
            unresolved.append(f"{name}: {e}")
    assert unresolved == []


def _requirements(project: dict) -> list[str]:
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return reqs


def test_dependencies_are_not_pinned():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = _requirements(data["project"]) + list(data.get("build-system", {}).get("requires", []))
    assert len(reqs) > 5
    pinned = [r for r in reqs if "==" in r]
    assert pinned == []
