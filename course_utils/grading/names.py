"""The names a cell's code imports, binds and reads, found by parsing it (never by running it).

``assignment.py`` finds the packages the check cells import (``imported_names``), ``rebuild.py``
what each learner cell defines (``defined_names``) and ``score.py`` what a failed check read
(``used_names``), to say which learner cell it depended on.
"""
import ast
import re


def _parse(source):
    """The syntax tree of ``source``, or None when it is not valid Python."""
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def imported_names(source):
    """Full names of what ``source`` imports: ``import a.b`` gives a.b; ``from a.b import c`` gives a.b and a.b.c."""
    tree = _parse(source)
    names = set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def defined_names(source):
    """Names a cell binds at its top level (functions, classes, assignments, imports), IPython syntax allowed."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        tree = ast.parse(TransformerManager().transform_cell(source))
    except Exception:  # a cell with a syntax error: what it meant to define, for the feedback
        found = re.findall(r"^(?:def|class)\s+(\w+)|^(\w+)\s*=", source, re.M)
        return {a or b for a, b in found}
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).partition(".")[0] for a in node.names}
        else:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    return names


def used_names(source):
    """Names ``source`` reads (loads), anywhere in it."""
    tree = _parse(source)
    nodes = ast.walk(tree) if tree is not None else ()
    return {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
