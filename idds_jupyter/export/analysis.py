"""Which variables a cell reads from the notebook and which it assigns.

Shared by ``%%idds work`` (what a cell captures from the kernel) and the notebook
export (the dependencies between cells). Pure: no imports of this package.
"""

from __future__ import annotations

import ast
import builtins


def cell_names(body: str) -> tuple[list[str], list[str]]:
    """``(reads, assigns)``: names the cell loads before assigning them, and names it binds.

    Only the cell's top level binds names for the caller: names bound inside its
    functions, classes and comprehensions are their own.
    """
    tree = ast.parse(body)
    assigns: list[str] = []
    reads: list[str] = []
    bound: set[str] = set()

    def bind(name: str) -> None:
        if name not in bound:
            bound.add(name)
            assigns.append(name)

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.depth = 0

        def visit_Name(self, node: ast.Name) -> None:
            if isinstance(node.ctx, ast.Load):
                if node.id not in bound and node.id not in reads and not hasattr(builtins, node.id):
                    reads.append(node.id)
            elif self.depth == 0:
                bind(node.id)

        def _scope(self, node: ast.AST, name: str | None = None) -> None:
            if name is not None and self.depth == 0:
                bind(name)
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            for d in node.decorator_list:
                self.visit(d)
            self._scope(node, node.name)

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            self._scope(node, node.name)

        def visit_Lambda(self, node: ast.Lambda) -> None:
            self._scope(node)

        def visit_ListComp(self, node: ast.AST) -> None:
            self._scope(node)

        visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

        def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
            if self.depth == 0:
                for alias in node.names:
                    if alias.name != "*":
                        bind(alias.asname or alias.name.split(".")[0])

        visit_ImportFrom = visit_Import

        def visit_AugAssign(self, node: ast.AugAssign) -> None:
            # ``total += x`` reads ``total`` before it binds it again
            t = node.target
            if isinstance(t, ast.Name) and t.id not in bound and t.id not in reads:
                reads.append(t.id)
            self.generic_visit(node)

    Visitor().visit(tree)
    return reads, assigns
