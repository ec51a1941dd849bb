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

    def local_names(node: ast.AST) -> set[str]:
        """Names a nested scope binds itself: its parameters, loop and comprehension
        targets, names it assigns or imports (a read of those is no read of the cell's)."""
        out: set[str] = set()
        args = getattr(node, "args", None)
        if isinstance(args, ast.arguments):
            for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                if a is not None:
                    out.add(a.arg)
        body = getattr(node, "body", None)
        parts: list[ast.AST] = list(body) if isinstance(body, list) else ([body] if body else [])
        parts += list(getattr(node, "generators", []) or [])
        for part in parts:
            for sub in ast.walk(part):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
                    out.add(sub.id)
                elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    out.add(sub.name)
                elif isinstance(sub, ast.alias):
                    out.add(sub.asname or sub.name.split(".")[0])
                elif isinstance(sub, ast.arg):
                    out.add(sub.arg)
        return out

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.scopes: list[set[str]] = []

        @property
        def depth(self) -> int:
            return len(self.scopes)

        def visit_Name(self, node: ast.Name) -> None:
            if isinstance(node.ctx, ast.Load):
                if (
                    node.id not in bound
                    and node.id not in reads
                    and not hasattr(builtins, node.id)
                    and not any(node.id in sc for sc in self.scopes)
                ):
                    reads.append(node.id)
            elif self.depth == 0:
                bind(node.id)

        def _scope(self, node: ast.AST, name: str | None = None) -> None:
            if name is not None and self.depth == 0:
                bind(name)
            self.scopes.append(local_names(node))
            self.generic_visit(node)
            self.scopes.pop()

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            for d in node.decorator_list:
                self.visit(d)
            for default in (*node.args.defaults, *node.args.kw_defaults):
                if default is not None:
                    self.visit(default)
            if self.depth == 0:
                bind(node.name)
            self.scopes.append(local_names(node))
            for stmt in node.body:
                self.visit(stmt)
            self.scopes.pop()

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            for x in (*node.decorator_list, *node.bases, *node.keywords):
                self.visit(x)
            if self.depth == 0:
                bind(node.name)
            self.scopes.append(local_names(node))
            for stmt in node.body:
                self.visit(stmt)
            self.scopes.pop()

        def visit_Lambda(self, node: ast.Lambda) -> None:
            for default in (*node.args.defaults, *node.args.kw_defaults):
                if default is not None:
                    self.visit(default)
            self.scopes.append(local_names(node))
            self.visit(node.body)
            self.scopes.pop()

        def visit_ListComp(self, node: ast.AST) -> None:
            self._scope(node)

        visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

        def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
            if self.depth == 0:
                for alias in node.names:
                    if alias.name != "*":
                        bind(alias.asname or alias.name.split(".")[0])

        visit_ImportFrom = visit_Import

        # Python evaluates the right-hand side (and a loop's iterable) before it binds the
        # targets: ``x = x + 1`` reads the notebook's ``x``
        def visit_Assign(self, node: ast.Assign) -> None:
            self.visit(node.value)
            for t in node.targets:
                self.visit(t)

        def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
            if node.value is not None:
                self.visit(node.value)
            self.visit(node.annotation)
            self.visit(node.target)

        def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
            self.visit(node.value)
            self.visit(node.target)

        def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
            self.visit(node.iter)
            self.visit(node.target)
            for stmt in (*node.body, *node.orelse):
                self.visit(stmt)

        visit_AsyncFor = visit_For

        def visit_AugAssign(self, node: ast.AugAssign) -> None:
            # ``total += x`` reads ``total`` before it binds it again
            t = node.target
            if (
                isinstance(t, ast.Name)
                and t.id not in bound
                and t.id not in reads
                and not any(t.id in sc for sc in self.scopes)
            ):
                reads.append(t.id)
            self.generic_visit(node)

    Visitor().visit(tree)
    return reads, assigns
