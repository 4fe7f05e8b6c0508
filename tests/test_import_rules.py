"""Imports flow one way (the design's layering), checked on the source with ``ast``.

The layers, bottom up:

* ``tollway`` (the error hierarchy and shared helpers) imports no other package,
  except ``tollway.cli``, the one module at the top that composes the command line;
* ``gpu_catalog`` (the GPU and model catalog and the performance model) imports
  ``tollway`` only;
* ``backends`` imports ``gpu_catalog`` and ``tollway``; ``billing`` and ``policies``
  import ``tollway`` only: never ``gateway``, never one another, never ``simulator``;
* ``policies`` are pure: no Redis client (stores are injected);
* ``simulator`` imports ``gpu_catalog`` (the one performance model it shares with the
  pools) and ``tollway``, nothing else of the product but the listed exceptions (the
  planner's reuse of the pools' picking and admission);
* ``gateway`` imports ``policies``, ``backends``, ``billing``, ``gpu_catalog`` and
  ``tollway``, never ``simulator`` and never ``tollway.cli``.

Each package's ``__init__`` docstring says what it owns and what it may import,
naming every package :data:`ALLOWED` lets it import
(:func:`test_each_package_says_what_it_owns_and_may_import`).

Every import counts, including the ones inside a function (a lazy import is still
a dependency). Where today's code breaks a rule and cannot yet be fixed, the
import is listed in ``EXCEPTIONS`` with the reason: the rule holds for everything
else, and a new breach fails here. Remove an entry when its import goes (a stale
entry fails too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tollway", "gpu_catalog", "gateway", "backends", "billing", "policies", "simulator")

#: (importing module, imported module or a prefix of it) -> why it is allowed for now.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("gateway.__main__", "tollway.cli"): (
        "``python -m gateway`` is an entry point (nothing imports it); it runs the "
        "command line composed at the top"
    ),
    ("simulator.planner.workers", "backends.sglang.admission"): (
        "the planner replays the pool's own KV admission, picking and worker state so "
        "its answers match the gateway's; they belong in a package both import"
    ),
    ("simulator.planner.workers", "backends.sglang.config"): "as above: HealthConfig",
    ("simulator.planner.workers", "backends.sglang.picking"): "as above: the pool's picker",
    ("simulator.planner.workers", "backends.sglang.worker"): "as above: the worker state",
    ("simulator.tokenizer", "policies.encodings"): (
        "the emulator counts tokens with the tokenizer files the gateway loads; the "
        "loader belongs in a package both may import (tollway)"
    ),
    ("simulator.planner.schema", "backends.sglang.config"): (
        "the planner's input names the pools' picking policies (PolicyName), which are "
        "the pools' own (the GPU and dtype names come from gpu_catalog)"
    ),
}

#: package -> the packages (or module prefixes) it may import; itself always allowed.
ALLOWED: dict[str, tuple[str, ...]] = {
    "tollway": (),
    "gpu_catalog": ("tollway",),
    "backends": ("tollway", "gpu_catalog"),
    "billing": ("tollway",),
    "policies": ("tollway",),
    # gpu_catalog: the one performance model the pools and the emulator share (the GPU
    # and model catalog, KV sizing, step time and SGLang's launch defaults).
    "simulator": ("tollway", "gpu_catalog"),
    "gateway": ("tollway", "policies", "backends", "billing", "gpu_catalog"),
}
#: Modules no product module may import (the top of the graph), whatever ALLOWED says.
TOP = ("tollway.cli",)
#: Third-party imports a package may not make: package -> forbidden prefixes.
#: Policies are pure: their stores are injected, so no Redis client of any kind.
FORBIDDEN_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "policies": ("redis", "hiredis", "tollway.resp")
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    return imports_in(path.read_text(), module_name(path), package=path.name == "__init__.py")


def imports_in(text: str, module: str, *, package: bool = False) -> Iterator[str]:
    """Every module the source ``text`` of ``module`` imports, lazy and relative ones included."""
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def all_imports() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = module_name(path)
            for target in set(imports_of(path)):
                yield source, target


def excepted(source: str, target: str) -> bool:
    return any(under(target, prefix) for (mod, prefix) in EXCEPTIONS if mod == source)


def breaches(imports: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (importing module, imported module) pairs among ``imports`` that break a rule."""
    found = []
    for source, target in imports:
        package = source.split(".")[0]
        top = target.split(".")[0]
        if source == "tollway.cli":
            continue  # the top: composes everything
        if any(under(target, t) for t in TOP) or (
            top in PACKAGES
            and top != package
            and not any(under(target, allowed) for allowed in ALLOWED[package])
        ):
            if not excepted(source, target):
                found.append((source, target))
        for forbidden in FORBIDDEN_THIRD_PARTY.get(package, ()):
            if under(target, forbidden) and not excepted(source, target):
                found.append((source, target))
    return sorted(set(found))


def may_import_paragraph(package: str) -> str:
    """The text of ``package``'s ``__init__`` docstring from "May import:" on ("" if none)."""
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
    _, found, rest = doc.partition("May import:")
    return rest if found and "Owns:" in doc else ""


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_says_what_it_owns_and_may_import(package: str) -> None:
    paragraph = may_import_paragraph(package)
    assert paragraph, f"{package}/__init__.py: say what it owns ('Owns:') and may import"
    for allowed in ALLOWED[package]:
        assert f"`{allowed}`" in paragraph, f"{package}/__init__.py does not name {allowed}"


def test_imports_flow_one_way() -> None:
    assert breaches(all_imports()) == []


@pytest.mark.parametrize(("source", "prefix"), sorted(EXCEPTIONS))
def test_each_exception_is_still_needed(source: str, prefix: str) -> None:
    assert any(mod == source and under(target, prefix) for mod, target in all_imports()), (
        f"{source} no longer imports {prefix}: remove the exception"
    )


def test_the_checker_sees_lazy_and_relative_imports() -> None:
    text = (
        "import typer\n"
        "from . import config\n"
        "from ..billing import ledger\n"
        "def build():\n"
        "    from simulator.cli import register\n"
    )
    names = set(imports_in(text, "gateway.cli"))
    assert {"typer", "gateway.config", "billing.ledger", "simulator.cli.register"} <= names


@pytest.mark.parametrize(
    ("source", "target", "breach"),
    [
        ("gateway.cli", "simulator.cli", True),
        ("gateway.app", "tollway.cli", True),
        ("gateway.app", "backends.sglang.pool", False),
        ("backends.sglang.pool", "gateway.config", True),
        ("billing.writer", "backends.retry", True),
        ("policies.tokens", "billing.usage", True),
        ("policies.tokens", "redis.asyncio", True),
        ("policies.summary_store", "redis.asyncio", True),
        ("policies.summary_store", "tollway.resp", True),
        ("simulator.engine", "gpu_catalog.capacity.KvPool", False),
        ("backends.sglang.health", "gpu_catalog.capacity", False),
        ("gpu_catalog.steptime", "backends.sglang.config", True),
        ("gpu_catalog.capacity", "simulator.engine", True),
        ("simulator.engine", "backends.sglang.pool", True),
        ("simulator.engine", "gateway.config", True),
        ("tollway.errors", "gateway.config", True),
        ("tollway.cli", "simulator.cli", False),
        ("billing.writer", "tollway.backoff", False),
    ],
)
def test_the_rules(source: str, target: str, breach: bool) -> None:
    assert bool(breaches([(source, target)])) is breach
