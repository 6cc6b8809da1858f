"""The package's import graph, read from its source: no cycle (imports inside functions count), and
the parts that only read records (report/, runner/store.py, runner/reproduce.py) load no training
code when imported, so that they run without a framework."""

from __future__ import annotations

import ast
from pathlib import Path

import tfp_vae

ROOT = Path(tfp_vae.__file__).parent
#: Modules that train or evaluate, and so load a framework or the model.
TRAINING = (
    "tfp_vae.train",
    "tfp_vae.steps",
    "tfp_vae.model",
    "tfp_vae.run",
    "tfp_vae.evaluate",
    "tfp_vae.networks",
    "tfp_vae.eval_data",
    "tfp_vae.backends.tensorflow",
    "tfp_vae.backends.jax",
)
READERS = ("tfp_vae.report", "tfp_vae.runner.store", "tfp_vae.runner.reproduce")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("tfp_vae", *path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The package's modules that `name` imports (`from a import b` counts a.b where it is a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != name}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules, top_level_only) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph[node] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_import_graph_has_no_cycle():
    assert _cycle(_graph(top_level_only=False)) is None, " -> ".join(_cycle(_graph(top_level_only=False)))


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_record_readers_load_no_training_code():
    graph = _graph(top_level_only=True)
    for start in [m for m in graph if m.startswith(READERS)]:
        loaded = _reachable(graph, start) & set(TRAINING)
        assert not loaded, f"{start} imports training code when imported: {sorted(loaded)}"


def test_what_training_and_evaluation_share_imports_neither():
    """eval_data.py holds what the trainer and the evaluation share, so it imports neither of them."""
    modules = _modules()
    imported = _imports("tfp_vae.eval_data", modules["tfp_vae.eval_data"], modules, top_level_only=False)
    assert not imported & {"tfp_vae.train", "tfp_vae.steps", "tfp_vae.evaluate", "tfp_vae.run"}, imported
