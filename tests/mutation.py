"""Mutation testing of the pure modules (make mutation; not part of CI): which edits do tests miss?

A small mutmut equivalent with no dependency: each mutant changes one operator, constant or
builtin of the module (comparisons, arithmetic, and/or, `not`, integers, booleans, min/max) in a
scratch copy of the repository, and runs that module's tests there. A mutant that the tests
fail on (or that hangs past the timeout) is killed; one they pass on survived and is listed with
its line, so that it gets a test or is recorded as equivalent.

    python -m tests.mutation billing parse snapshot forecast
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The tests that speak for each module: fast ones, over loopback where I/O is involved.
TESTS = {
    "billing": ["tests/test_billing.py", "tests/test_snapshot.py", "tests/test_blocked_states.py"],
    "parse": [
        "tests/test_parse.py",
        "tests/test_properties.py::test_every_shape_reads_to_the_figures_it_carries_never_zero_never_twice",
        "tests/test_properties.py::test_parse_fails_exactly_when_nothing_usable_is_left",
        "tests/test_collector.py",
    ],
    "snapshot": [
        "tests/test_snapshot.py",
        "tests/test_collector.py",
        "tests/test_billing.py",
        "tests/test_blocked_states.py",
    ],
    "forecast": ["tests/test_forecast.py", "tests/test_snapshot.py", "tests/test_collector.py"],
}
TIMEOUT = 120.0

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_NAME_SWAPS = {"min": "max", "max": "min", "True": "False", "False": "True"}


@dataclass(frozen=True)
class Mutant:
    index: int
    line: int
    description: str


class _Mutator(ast.NodeTransformer):
    """Visits every mutation point in order; applies the one numbered `target` (or none)."""

    def __init__(self, target: int | None) -> None:
        self.target = target
        self.found: list[Mutant] = []

    def _point(self, node: ast.AST, description: str) -> bool:
        index = len(self.found)
        self.found.append(Mutant(index, getattr(node, "lineno", 0), description))
        return index == self.target

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        # Docstrings and bare strings: nothing to mutate.
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node
        return self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node  # message texts

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node  # never the annotation

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        # Decorators (dataclass(frozen=True, slots=True)) are not behaviour the tests pin.
        node.body = [self.visit(statement) for statement in node.body]
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        # Decorators and annotations stay; the body and the defaults are mutated.
        for statement in node.body:
            self.visit(statement)
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [
            None if d is None else self.visit(d) for d in node.args.kw_defaults
        ]
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for position, op in enumerate(node.ops):
            swap = _COMPARE_SWAPS.get(type(op))
            if swap is not None and self._point(node, f"{type(op).__name__} -> {swap.__name__}"):
                node.ops[position] = swap()
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        swap = _BINOP_SWAPS.get(type(node.op))
        if swap is not None and self._point(node, f"{type(node.op).__name__} -> {swap.__name__}"):
            node.op = swap()
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        swap = _BINOP_SWAPS.get(type(node.op))
        if swap is not None and self._point(node, f"{type(node.op).__name__}= -> {swap.__name__}="):
            node.op = swap()
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        swap = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._point(node, f"{type(node.op).__name__} -> {swap.__name__}"):
            node.op = swap()
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._point(node, "not x -> x"):
            return node.operand
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool):
            if self._point(node, f"{value} -> {not value}"):
                return ast.copy_location(ast.Constant(not value), node)
        elif isinstance(value, int | float) and self._point(node, f"{value} -> {value + 1}"):
            return ast.copy_location(ast.Constant(value + 1), node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        swap = _NAME_SWAPS.get(node.id)
        loaded = isinstance(node.ctx, ast.Load)
        if swap is not None and loaded and self._point(node, f"{node.id} -> {swap}"):
            return ast.copy_location(ast.Name(swap, ast.Load()), node)
        return node


def mutants(source: str) -> list[Mutant]:
    mutator = _Mutator(None)
    mutator.visit(ast.parse(source))
    return mutator.found


def mutated(source: str, index: int) -> str:
    tree = _Mutator(index).visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree))


def _scratch() -> Path:
    """A copy of the package and the tests, where mutants are written."""
    root = Path(tempfile.mkdtemp(prefix="x-usage-exporter-mutation-"))
    for name in ("exporter", "benchmarks", "tests", "alerts"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _run_tests(root: Path, tests: list[str]) -> bool:
    """True when the tests pass (the mutant survived)."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(
            command, cwd=root, env=env, capture_output=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _indices(spec: str) -> set[int]:
    """Mutant numbers from `3,7,10-20` (as `--list` prints them)."""
    chosen: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    return chosen


def run(module: str, every: int = 1, only: set[int] | None = None) -> Iterator[tuple[Mutant, bool]]:
    root = _scratch()
    path = root / "exporter" / f"{module}.py"
    original = path.read_text(encoding="utf-8")
    try:
        if not _run_tests(root, TESTS[module]):
            raise SystemExit(f"{module}: the tests fail without any mutant")
        for mutant in mutants(original)[::every]:
            if only is not None and mutant.index not in only:
                continue
            path.write_text(mutated(original, mutant.index), encoding="utf-8")
            yield mutant, _run_tests(root, TESTS[module])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=["billing", "parse", "snapshot", "forecast"])
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    parser.add_argument("--every", type=int, default=1, help="run every Nth mutant (a sample)")
    parser.add_argument("--only", type=_indices, help="run only these mutants (e.g. 3,7,10-20)")
    args = parser.parse_args()
    for module in args.modules:
        source = (REPO / "exporter" / f"{module}.py").read_text(encoding="utf-8")
        if args.list:
            for mutant in mutants(source):
                print(f"{mutant.index} {module}.py:{mutant.line}: {mutant.description}")
            continue
        started = time.monotonic()
        survived: list[Mutant] = []
        total = 0
        for mutant, alive in run(module, args.every, args.only):
            total += 1
            if alive:
                survived.append(mutant)
                print(
                    f"survived {mutant.index} {module}.py:{mutant.line}: {mutant.description}",
                    flush=True,
                )
        killed = total - len(survived)
        score = killed / total if total else 1.0
        print(
            f"{module}: {killed}/{total} mutants killed ({score:.0%}) "
            f"in {time.monotonic() - started:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
