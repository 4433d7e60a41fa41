"""The layering contract: the SIP, media and identity cores are sans-I/O.

They take bytes and ``now`` and return bytes, events and actions, so they
must not reach ``twisted``, sockets, the clock, asyncio or SQLite, directly or
through another ``appliance`` module they import. Adapters such as
``sip/transport.py`` and ``media/udp.py`` are the named exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORES = ("appliance.sip", "appliance.media", "appliance.identity")
ADAPTERS = frozenset(
    {
        "appliance.sip.transport",
        "appliance.sip.dns",
        "appliance.sip.outbound",
        "appliance.media.udp",
    }
)
FORBIDDEN = ("twisted", "socket", "time", "asyncio", "sqlite3", "sqlite_utils", "select")


def module_graph(root: Path, package: str = "appliance") -> dict[str, set[str]]:
    """Every module under ``root/package`` mapped to the modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        graph[name] = _imports(path, name, is_package)
    return graph


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*prefix, node.module] if node.module else prefix)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _in_core(module: str) -> bool:
    return any(module == core or module.startswith(core + ".") for core in CORES)


def violations(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import chains from a core module to a forbidden module or an adapter."""
    found = []
    for start in sorted(graph):
        if not _in_core(start) or start in ADAPTERS:
            continue
        seen, stack = {start}, [[start]]
        while stack:
            chain = stack.pop()
            for imported in sorted(graph.get(chain[-1], ())):
                top = imported.split(".")[0]
                if top in FORBIDDEN or imported in ADAPTERS:
                    found.append([*chain, imported])
                elif imported in graph and imported not in seen:
                    seen.add(imported)
                    stack.append([*chain, imported])
    return found


def test_cores_import_no_io() -> None:
    """No module of the sans-I/O cores reaches Twisted, sockets, time or SQLite."""
    assert violations(module_graph(ROOT)) == []


def test_checker_catches_direct_and_indirect_imports(tmp_path: Path) -> None:
    """The checker flags a core importing Twisted directly, through a helper module
    or through an adapter, and lets adapters and non-core modules import Twisted."""
    files = {
        "appliance/__init__.py": "",
        "appliance/helpers.py": "import time\n",
        "appliance/sip/__init__.py": "",
        "appliance/sip/parser.py": "from twisted.internet import reactor\n",
        "appliance/sip/registrar.py": "from ..helpers import now\n",
        "appliance/sip/clean.py": "from . import parser_free\nimport re\n",
        "appliance/sip/transport.py": "from twisted.internet import protocol\n",
        "appliance/media/__init__.py": "",
        "appliance/media/relay.py": "from appliance.sip import transport\n",
        "appliance/service.py": "from twisted.application import service\n",
        "appliance/sipservice.py": "from appliance.sip import transport\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    chains = violations(module_graph(tmp_path))
    assert ["appliance.sip.parser", "twisted.internet"] in chains
    assert ["appliance.sip.registrar", "appliance.helpers", "time"] in chains
    flagged = {chain[0] for chain in chains}
    assert ["appliance.media.relay", "appliance.sip.transport"] in chains
    assert flagged == {"appliance.sip.parser", "appliance.sip.registrar", "appliance.media.relay"}
