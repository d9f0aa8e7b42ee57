"""The Python signatures, written in several places by hand, agree.

Each public function's parameters (names, order, positional / keyword-only,
which have defaults and what they are) appear in up to five places:

  (a) the C++ argument parser table (`Signature<N> sig("name", {...}, npos,
      nrequired)` in csrc/python/), which is what the call really accepts;
  (b) the docstring's first line, `name(...)`; CPython turns it into
      `__text_signature__` when "--" follows it, but then inspect and help()
      need literal defaults, so to_tensor's (float_dtype=torch.float32)
      stays plain text;
  (c) torchbridge/_C.pyi, read with `ast`;
  (d) `inspect.signature`, where it works (the only source for the Python
      tree functions);
  (e) the README's "Python API" block.

They are kept hand-written (each is where a reader looks) and this file is
what keeps them from drifting: every source is parsed into the same form and
compared. The operator schemas in the README's torch.ops block are compared
with the registered schemas too.
"""

from __future__ import annotations

import ast
import inspect
import pydoc
import re
from pathlib import Path

import pytest
import torch

import torchbridge as tb
from torchbridge import _C

REPO = Path(__file__).resolve().parents[1]
PYI = REPO / "torchbridge" / "_C.pyi"
README = REPO / "README.md"

# One parameter: (name, kind, default). kind is inspect.Parameter's kind name
# in lower case; default is None for "no default", "..." for "a default the
# source does not spell out" (a stub's `= ...`, or the C++ table, which only
# knows which arguments are optional), else the default's source text.
NO_DEFAULT = None
SOME_DEFAULT = "..."


def _params_from_ast(args: ast.arguments) -> list[tuple]:
    out = []
    positional = args.posonlyargs + args.args
    defaults = [NO_DEFAULT] * (len(positional) - len(args.defaults)) + [
        ast.unparse(d) for d in args.defaults]
    for i, (a, d) in enumerate(zip(positional, defaults)):
        kind = ("positional_only" if i < len(args.posonlyargs)
                else "positional_or_keyword")
        out.append((a.arg, kind, d))
    if args.vararg:
        out.append((args.vararg.arg, "var_positional", NO_DEFAULT))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append((a.arg, "keyword_only",
                    NO_DEFAULT if d is None else ast.unparse(d)))
    if args.kwarg:
        out.append((args.kwarg.arg, "var_keyword", NO_DEFAULT))
    return out


def _params_from_text(name: str, text: str) -> list[tuple]:
    """`text` is "(a, b=1, *, c=None)" as written in a docstring or README."""
    tree = ast.parse(f"def {name}{text}: pass")
    return _params_from_ast(tree.body[0].args)


def _params_from_inspect(fn) -> list[tuple]:
    out = []
    for p in inspect.signature(fn).parameters.values():
        d = NO_DEFAULT if p.default is p.empty else repr(p.default)
        out.append((p.name, p.kind.name.lower(), d))
    return out


# --- (a) the C++ tables ------------------------------------------------------

_CPP_SOURCES = sorted((REPO / "csrc" / "python").glob("*.cpp"))

_SIGNATURE_RE = re.compile(
    r'Signature<(\d+)>\s+\w+\(\s*"(\w+)",\s*\{([^}]*)\},\s*(\d+),\s*(\d+)\s*\)')
_METHOD_RE = re.compile(
    r'\{"(\w+)",\s*(?:reinterpret_cast<PyCFunction>\()?\w+\)?,\s*'
    r'(METH_[A-Z_| ]+?),')


def _cpp_text() -> str:
    return "\n".join(p.read_text() for p in _CPP_SOURCES)


def cpp_tables() -> dict[str, list[tuple]]:
    """name -> params from each `Signature<N> sig(...)`; defaults unknown."""
    tables = {}
    for m in _SIGNATURE_RE.finditer(_cpp_text()):
        n, name, names, npos, nreq = m.groups()
        names = re.findall(r'"(\w+)"', names)
        assert len(names) == int(n), f"{name}: Signature<{n}> lists {names}"
        assert name not in tables, f"two parser tables named {name}"
        tables[name] = [
            (p, "positional_or_keyword" if i < int(npos) else "keyword_only",
             NO_DEFAULT if i < int(nreq) else SOME_DEFAULT)
            for i, p in enumerate(names)]
    return tables


def cpp_methods() -> dict[str, set[str]]:
    """name -> METH_ flags of every PyMethodDef entry in csrc/python/."""
    out = {}
    for m in _METHOD_RE.finditer(_cpp_text()):
        out[m.group(1)] = {f.strip() for f in m.group(2).split("|")}
    return out


# --- (c) the stub, (e) the README ----------------------------------------------

def pyi_functions() -> dict[str, list[tuple]]:
    tree = ast.parse(PYI.read_text())
    return {node.name: _params_from_ast(node.args) for node in tree.body
            if isinstance(node, ast.FunctionDef)}


def pyi_names() -> set[str]:
    names = set()
    for node in ast.parse(PYI.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    return names


def _readme_block(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, f"README {heading!r} has no python block"
    return block.group(1)


def _calls(block: str, prefix: str) -> dict[str, str]:
    """prefix + name + "(...)" -> {name: "(...)"}, parentheses balanced."""
    out = {}
    for m in re.finditer(re.escape(prefix) + r"(\w+)\(", block):
        depth, i = 0, m.end() - 1
        for j in range(i, len(block)):
            depth += {"(": 1, ")": -1}.get(block[j], 0)
            if depth == 0:
                break
        assert m.group(1) not in out, f"README lists {m.group(1)} twice"
        out[m.group(1)] = " ".join(block[i:j + 1].split())
    return out


def readme_functions() -> dict[str, list[tuple]]:
    return {name: _params_from_text(name, text) for name, text in
            _calls(_readme_block("## Python API"), "tb.").items()}


# --- the public functions ----------------------------------------------------

PUBLIC = sorted(n for n in tb.__all__ if callable(getattr(tb, n)))
C_PUBLIC = sorted(n for n in dir(_C) if not n.startswith("_")
                  and inspect.isbuiltin(getattr(_C, n)))


def test_public_names_are_the_expected_ones():
    # A new public function must be added to this file's checks by name.
    assert PUBLIC == ["collate", "load", "prefetch", "save", "to_host", "to_numpy",
                      "to_scipy", "to_tensor", "tree_to_numpy", "tree_to_tensor"]
    assert C_PUBLIC == ["load", "save", "to_host", "to_numpy", "to_tensor"]


def test_parser_tables_are_all_found():
    # Every keyword-taking entry point has exactly one table (a regex that
    # stopped matching would otherwise pass silently).
    methods = cpp_methods()
    assert set(C_PUBLIC) <= set(methods)
    keyworded = {n for n, f in methods.items() if "METH_KEYWORDS" in f}
    assert keyworded == set(cpp_tables())


def test_stub_declares_exactly_what_the_module_has():
    module = {n for n in dir(_C) if not n.startswith("__")}
    assert pyi_names() == module


@pytest.mark.parametrize("name", PUBLIC)
def test_public_signature_agrees_everywhere(name):
    fn = getattr(tb, name)
    sources = {"README Python API": readme_functions().get(name)}
    if not inspect.isbuiltin(fn) or fn.__text_signature__:
        sources["inspect.signature"] = _params_from_inspect(fn)
    if name in C_PUBLIC:
        # The public names are the compiled functions themselves.
        assert fn is getattr(_C, name)
        sources["docstring signature line"] = _params_from_text(
            name, _doc_signature(name, fn))
        sources["_C.pyi"] = pyi_functions().get(name)
        sources["C++ parser table"] = cpp_tables().get(name)
    missing = [s for s, p in sources.items() if p is None]
    assert not missing, f"{name} is not declared in: {missing}"
    _assert_agree(name, sources)


@pytest.mark.parametrize("name", sorted(
    n for n in dir(_C) if n.startswith("_") and not n.startswith("__")
    and inspect.isbuiltin(getattr(_C, n))))
def test_private_signature_agrees_with_the_stub(name):
    fn = getattr(_C, name)
    stub = pyi_functions()[name]
    sources = {"_C.pyi": stub}
    if fn.__text_signature__ or (fn.__doc__ or "").startswith(name + "("):
        sources["docstring signature line"] = _params_from_text(
            name, _doc_signature(name, fn))
    if name in cpp_tables():
        sources["C++ parser table"] = cpp_tables()[name]
    _assert_agree(name, sources)
    # Entry points without a keyword table take positional arguments only.
    flags = cpp_methods()[name]
    if "METH_NOARGS" in flags:
        assert stub == []
    elif "METH_O" in flags:
        assert [k for _, k, _ in stub] == ["positional_only"]
    elif "METH_KEYWORDS" not in flags:
        assert {k for _, k, _ in stub} <= {"positional_only"}, (
            f"{name} takes no keywords; mark its stub parameters with '/'")


def _doc_signature(name: str, fn) -> str:
    """The "(...)" of the docstring's signature line."""
    if fn.__text_signature__:
        return fn.__text_signature__
    first = (fn.__doc__ or "").split("\n", 1)[0]
    assert first.startswith(name + "("), (
        f"{name}'s docstring does not open with its signature: {first!r}")
    return first[len(name):]


@pytest.mark.parametrize("name", C_PUBLIC)
def test_help_shows_the_signature(name):
    # A __text_signature__ that inspect cannot evaluate (a default such as
    # torch.float32) makes help() print "name(...)" and drop the line.
    fn = getattr(_C, name)
    text = pydoc.render_doc(fn, renderer=pydoc.plaintext)
    assert name + _doc_signature(name, fn) in text, text[:300]


def _assert_agree(name: str, sources: dict[str, list[tuple]]) -> None:
    ref_name, ref = next(iter(sources.items()))
    for src, params in sources.items():
        assert [(n, k) for n, k, _ in params] == [(n, k) for n, k, _ in ref], (
            f"{name}: parameter names/kinds differ between {ref_name} "
            f"{ref} and {src} {params}")
        for (p, _, d), (_, _, dref) in zip(params, ref):
            if SOME_DEFAULT in (d, dref):
                same = (d is NO_DEFAULT) == (dref is NO_DEFAULT)
            else:
                same = d == dref
            assert same, (f"{name}({p}=...): default {dref} in {ref_name}, "
                          f"{d} in {src}")


def test_readme_lists_every_public_function():
    assert sorted(readme_functions()) == PUBLIC


def test_readme_operator_schemas_are_the_registered_ones():
    listed = _calls(_readme_block("## torch.ops and torch.compile"),
                    "torch.ops.torchbridge.")
    assert sorted(listed) == ["coerce", "to_host"]
    block = " ".join(_readme_block("## torch.ops and torch.compile").split())
    for name in listed:
        schema = str(getattr(torch.ops.torchbridge, name).default._schema)
        assert schema.startswith("torchbridge::")
        assert ("torch.ops.torchbridge." + schema[len("torchbridge::"):]
                in block), f"README's {name} schema is not {schema}"
