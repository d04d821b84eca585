"""The layout the design asks for: the straight path (YAML -> config -> method ->
Trainer -> run directory, and the command line) names no method, encoder kind or
evaluation; no file is too big to hold one idea; probing is confined to third-party
objects."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import contrastlib.components  # noqa: F401  (fills the registries)
from contrastlib.registry import ENCODERS, EVALUATIONS, METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "contrastlib"
#: The path every method, encoder and evaluation goes through.
STRAIGHT_PATH = [PACKAGE / "pipeline.py", PACKAGE / "jobs.py", PACKAGE / "loading.py", PACKAGE / "environment.py",
                 *sorted((PACKAGE / "config").glob("*.py")), *sorted((PACKAGE / "cli").glob("*.py"))]


def _names() -> set[str]:
    """Registered methods, encoders and evaluations, less the learning-rate schedule that
    shares a name with the linear probe (``optim.scheduler: linear``)."""
    from contrastlib.config.schema import SCHEDULERS

    return {*METHODS.names(), *ENCODERS.names(), *EVALUATIONS.names()} - set(SCHEDULERS)


def _component_modules() -> set[str]:
    """Modules that define a registered method, encoder or evaluation, and the rooms of
    one method only (``methods/NAME_data.py``, ``methods/NAME_batches.py``, ``models/NAME.py``)."""
    defining = {e.obj.__module__ for r in (METHODS, ENCODERS, EVALUATIONS) for e in r.entries()}
    methods = {e.obj.__module__ for e in METHODS.entries()}
    own = {f"{m}{suffix}" for m in methods for suffix in ("_data", "_batches")}
    own |= {f"contrastlib.models.{m.rsplit('.', 1)[1]}" for m in methods}
    return defining | own


def _literals_and_imports(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    imports = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imports |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return literals, imports


def test_the_straight_path_names_no_method_encoder_or_evaluation():
    names = _names()
    found = []
    for path in STRAIGHT_PATH:
        literals, imports = _literals_and_imports(path)
        found += [f"{path.name}: {n!r}" for n in sorted(names & literals)]
        found += [f"{path.name}: imports {m}" for m in sorted(imports & _component_modules())]
    assert not found, found


def test_the_check_sees_a_name_when_there_is_one(tmp_path):
    """The test above can fail: a literal naming a method is found."""
    bad = tmp_path / "bad.py"
    bad.write_text('ENCODER = "image"\nfrom contrastlib.methods.simcse import SimCSE\n')
    literals, imports = _literals_and_imports(bad)
    assert "image" in literals and "contrastlib.methods.simcse" in imports


def test_no_file_is_over_400_lines_and_no_method_over_300():
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    big = [f"{p.relative_to(PACKAGE)}: {n}" for p, n in sizes.items() if n > 400]
    big += [f"{p.relative_to(PACKAGE)}: {n}" for p, n in sizes.items() if p.parent.name == "methods" and n > 300]
    assert not big, big


def test_probing_is_confined_to_third_party_objects():
    """At most 10 getattr/hasattr sites, each with a comment saying which third-party
    object it probes (a duck-typing boundary)."""
    sites = []
    for p in PACKAGE.rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"\b(getattr|hasattr)\(", line) and "def __getattr__" not in line:
                sites.append((p.relative_to(PACKAGE), i, line))
    assert len(sites) <= 10, [f"{p}:{i}" for p, i, _ in sites]
    lines = {p: (PACKAGE / p).read_text().splitlines() for p, _, _ in sites}
    undocumented = [f"{p}:{i}" for p, i, line in sites
                    if "duck typing" not in line and "duck typing" not in lines[p][i - 2]]
    assert not undocumented, undocumented


def test_every_room_and_shipped_folder_is_installed():
    """pyproject lists every package of contrastlib/ and the shipped configs/ and
    datasets/ (installed inside the package), so a `pip install` user has them all."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    rooms = {"contrastlib", *(f"contrastlib.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py"))}
    data = {"contrastlib.configs", "contrastlib.datasets"}
    data |= {f"contrastlib.datasets.{p.name}" for p in (PACKAGE.parent / "datasets").iterdir()
             if p.is_dir() and p.name.isidentifier()}
    assert listed == rooms | data
