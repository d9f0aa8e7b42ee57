"""Every file the docs point to exists in the repo.

Scanned: every tracked Markdown file, the comments and string literals of
csrc/ (which hold the Python docstrings), and the docstrings and comments of
torchbridge/ and test/. A reference is a path with a slash and a file
extension (`csrc/core/transfer.cpp`, `ops/meta.cpp`), any `*.md` name, and
in Markdown a backticked folder (`examples/cpp/`). It resolves when it names
a tracked file or folder relative to the repo root, to the citing file's
folder or one above it, or as the tail of a tracked path (`bridge.md` for
benchmarks/reference/bridge.md), or a gitignored output (benchmarks/results/).
The project's design contract lives outside the repo, so the code cites the
README section that states each rule.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]

_EXT = r"(?:md|py|pyi|h|hpp|cpp|cu|cmake|in|sh|txt|json|png|toml|cfg|ya?ml)"
# A path with at least one slash, or a bare *.md name. Not preceded by a
# word character, dot, slash, ':' or '@' (URLs, emails, "repo: path" cites
# are caught by EXTERNAL below).
_REF_RE = re.compile(
    r"(?<![\w./:@-])((?:[\w.-]+/)+[\w.-]+\." + _EXT + r"|[\w.-]+\.md)(?![\w/-])")
_DIR_RE = re.compile(r"`((?:[\w.-]+/)+)`")

# Files of other projects, cited by their own paths.
EXTERNAL = ("numpy/lib/format.py",)


def _tracked() -> list[str]:
    try:
        # Tracked files and new ones not yet committed (not ignored ones).
        out = subprocess.run(["git", "ls-files", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to list the repo's files",
                    allow_module_level=True)
    return out.split()


TRACKED = _tracked()
DIRS = {str(p) for f in TRACKED for p in PurePosixPath(f).parents} - {"."}


def _cpp_text(path: Path) -> str:
    # Comments and string literals; #include lines name other projects'
    # headers and are checked by the compiler.
    return "\n".join(line for line in path.read_text().splitlines()
                     if not line.lstrip().startswith("#include"))


def _python_text(path: Path) -> str:
    src = path.read_text()
    parts = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            parts.append(tok.string)
    return "\n".join(parts)


def _sources() -> list[tuple[str, str]]:
    out = []
    for f in TRACKED:
        p = REPO / f
        if f.endswith(".md"):
            out.append((f, p.read_text()))
        elif f.startswith("csrc/") and f.endswith((".h", ".cpp", ".cu")):
            out.append((f, _cpp_text(p)))
        elif f.startswith(("torchbridge/", "test/")) and f.endswith(
                (".py", ".pyi")) and not f.startswith("test/cpp/"):
            out.append((f, _python_text(p)))
    return out


def _resolves(ref: str, cited_in: str) -> bool:
    # Outputs (benchmarks/results/) are gitignored by design.
    if subprocess.run(["git", "check-ignore", "-q", "--no-index", ref],
                      cwd=REPO).returncode == 0:
        return True
    ref = ref.rstrip("/")
    if ref in TRACKED or ref in DIRS:
        return True
    for base in PurePosixPath(cited_in).parents:
        cand = str(base / ref) if str(base) != "." else ref
        if cand in TRACKED or cand in DIRS:
            return True
    tail = "/" + ref
    return any(f.endswith(tail) for f in TRACKED) or any(
        d.endswith(tail) for d in DIRS)


def references(text: str, markdown: bool) -> set[str]:
    refs = {m.group(1) for m in _REF_RE.finditer(text)}
    if markdown:
        refs |= {m.group(1) for m in _DIR_RE.finditer(text)}
    return {r for r in refs if not r.startswith(EXTERNAL)}


def test_the_scan_sees_the_docs():
    # Guards the scan itself: an empty file list would pass everything.
    names = [f for f, _ in _sources()]
    assert "README.md" in names and "csrc/python/module.cpp" in names
    assert "torchbridge/__init__.py" in names
    readme = dict(_sources())["README.md"]
    assert "csrc/README.md" in references(readme, markdown=True)
    assert not _resolves("API.md", "README.md")
    assert _resolves("ops/meta.cpp", "csrc/python/module.cpp")


def test_every_referenced_file_exists():
    missing = []
    for f, text in _sources():
        for ref in sorted(references(text, markdown=f.endswith(".md"))):
            if not _resolves(ref, f):
                missing.append(f"{f}: {ref}")
    assert not missing, "references to files not in the repo:\n" + "\n".join(
        missing)
