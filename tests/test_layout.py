"""The tree shows its architecture: packages by role with imports only downward and no circle,
no module reaching up into the repository root, modules and functions of a readable size, a
short README whose links (and the docs' links) all resolve."""

import ast
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_DIR

sys.path.insert(0, os.path.join(REPO_DIR, "scripts"))
import import_graph  # noqa: E402

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
ROOT_SCRIPTS = sorted(name[:-3] for name in os.listdir(REPO_DIR) if name.endswith(".py"))


def _tlbench_files():
    for folder, _, files in os.walk(os.path.join(REPO_DIR, "tlbench")):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_the_import_graph_has_no_circle_and_only_downward_imports():
    process = subprocess.run([sys.executable, os.path.join(REPO_DIR, "scripts", "import_graph.py")],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "no circle, every import downward" in process.stdout


def test_the_checker_sees_a_circle_and_an_upward_import():
    edges = {"tlbench.core.a": {"tlbench.report.b"}, "tlbench.report.b": {"tlbench.core.a"}}
    assert import_graph.cycles(edges) == [["tlbench.core.a", "tlbench.report.b"]]
    assert import_graph.upward_edges(edges) == [("tlbench.core.a", "tlbench.report.b")]


def test_the_checker_reads_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "tlbench" / "core"
    package.mkdir(parents=True)
    (package / "x.py").write_text("def f():\n    from ..report import y\n    import tlbench.render.z\n")
    known = {"tlbench.report", "tlbench.report.y", "tlbench.render.z", "tlbench.core.x"}
    assert import_graph.imports_of(str(package / "x.py"), "tlbench.core.x", known) == {
        "tlbench.report", "tlbench.report.y", "tlbench.render.z"}


def test_no_library_module_imports_a_top_level_script_or_the_checkout():
    for path in _tlbench_files():
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in ROOT_SCRIPTS, f"{path} imports the root script {name}"
        text = open(path, encoding="utf-8").read()
        if "sys.path.insert" in text:
            # the registry alone: `--impl module:NAME` resolves modules of the user's current
            # directory, as `python -m` does; it never adds the checkout
            assert path.endswith(os.path.join("implementations", "registry.py")), path
            assert "os.getcwd()" in text and "REPO_DIR" not in text


def test_every_module_and_function_has_a_readable_size():
    too_long = []
    for path in _tlbench_files():
        text = open(path, encoding="utf-8").read()
        rel = os.path.relpath(path, REPO_DIR)
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_every_package_has_a_role_and_public_names():
    packages = sorted(d for d in os.listdir(os.path.join(REPO_DIR, "tlbench"))
                      if os.path.isdir(os.path.join(REPO_DIR, "tlbench", d)) and not d.startswith("__"))
    assert packages == sorted(import_graph.LAYERS)
    flat = [n for n in os.listdir(os.path.join(REPO_DIR, "tlbench")) if n.endswith(".py") and n != "__init__.py"]
    assert flat == [], "modules belong in a package"
    for path in _tlbench_files():
        text = open(path, encoding="utf-8").read()
        # a built-in's module has one public name, fixed by the registry: IMPLEMENTATION
        declaration = os.sep + "implementations" + os.sep in path and "\nIMPLEMENTATION = " in text
        if not path.endswith("__init__.py") and not declaration:
            assert "__all__" in text, f"{path} has no __all__"


def _markdown_files():
    yield os.path.join(REPO_DIR, "README.md")
    docs = os.path.join(REPO_DIR, "docs")
    for name in sorted(os.listdir(docs)):
        if name.endswith(".md"):
            yield os.path.join(docs, name)


def test_the_readme_fits_on_a_few_screens():
    with open(os.path.join(REPO_DIR, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 250


@pytest.mark.parametrize("path", list(_markdown_files()), ids=os.path.basename)
def test_every_relative_link_resolves(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = os.path.normpath(os.path.join(os.path.dirname(path), link.split("#", 1)[0]))
        if not os.path.exists(target):
            broken.append(link)
    assert not broken, f"{os.path.relpath(path, REPO_DIR)}: {broken}"


def test_the_readme_results_table_is_the_published_report():
    """The README's table is copied from docs/results.md (report.py --publish), never edited."""
    readme = open(os.path.join(REPO_DIR, "README.md"), encoding="utf-8").read()
    published = open(os.path.join(REPO_DIR, "docs", "results.md"), encoding="utf-8").read()
    block = readme.split("<!-- results:begin -->", 1)[1].split("<!-- results:end -->", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|") or line.startswith("- ")]
    assert len([r for r in rows if r.startswith("| ")]) >= 3
    for line in rows:
        assert line in published.splitlines(), line
