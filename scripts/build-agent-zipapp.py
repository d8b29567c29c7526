"""Build ``jobfleet-agent.pyz``: the agent as one file for hosts without pip.

    python scripts/build-agent-zipapp.py [OUTPUT]      (default dist/jobfleet-agent.pyz)
    python3 jobfleet-agent.pyz --server URL --enroll-token-file FILE --state-dir DIR --ip IP

Run it with the Python that has jobfleet installed (``make agent-zipapp``). The
archive holds the agent's modules (exactly those the agent imports, found by
importing them here) and the pure-Python packages they need, copied from this
environment, with their byte code for the Python that builds it; compiled modules
are left out (websockets and the agent's JSON fall back to pure Python), so the
archive runs on any CPython >= 3.11.
"""

from __future__ import annotations

import compileall
import importlib
import py_compile
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

# what the agent's code imports, the file movers included
ENTRY_MODULES = [
    "jobfleet.agent.main",
    "jobfleet.agent.lazy",
    "jobfleet.agent.connection",
    "jobfleet.agent.files.download",
    "jobfleet.agent.files.upload",
    "jobfleet.agent.files.swarm",
    "jobfleet.agent.peers",
    # the HTTP client of file transfers, with what it loads only once it connects
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "certifi",
]
# third-party packages the archive carries (pure Python); others found are left out:
# orjson (compiled, optional) and what ``import httpx`` loads for its own command line
ALLOWED = {
    "websockets",
    "annotated_types",
    "typing_extensions",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "idna",
    "certifi",
}
# the server's and the operator CLI's: the agent must not import these at all
FORBIDDEN = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "typer"}
MAIN = """import sys

from jobfleet.agent.main import main

sys.exit(main(prog="jobfleet-agent.pyz"))
"""


def _tops_and_files() -> tuple[set[Path], set[str]]:
    """The jobfleet module files the agent loads, and the third-party packages."""
    before = set(sys.modules)
    for name in ENTRY_MODULES:
        importlib.import_module(name)
    own: set[Path] = set()
    tops: set[str] = set()
    stdlib = set(sys.stdlib_module_names)
    for name in set(sys.modules) - before | {m for m in sys.modules if m.startswith("jobfleet")}:
        module = sys.modules.get(name)
        top = name.split(".")[0]
        if top in stdlib or top.startswith("_") or module is None:
            continue
        if top == "jobfleet":
            if getattr(module, "__file__", None):
                own.add(Path(module.__file__))  # type: ignore[arg-type]
        elif getattr(module, "__file__", None):
            tops.add(top)
    forbidden = tops & FORBIDDEN
    if forbidden:
        raise SystemExit(f"the agent imports packages of the server: {sorted(forbidden)}")
    return own, tops & ALLOWED


def build(output: Path) -> Path:
    own, tops = _tops_and_files()
    import jobfleet

    src_root = Path(jobfleet.__file__).parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        for path in sorted(own):
            dest = stage / path.relative_to(src_root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        for top in sorted(tops):
            module = importlib.import_module(top)
            origin = Path(module.__file__)  # type: ignore[arg-type]
            if origin.name == "__init__.py":
                shutil.copytree(
                    origin.parent,
                    stage / top,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c"),
                )
            else:
                shutil.copy2(origin, stage / origin.name)
        (stage / "__main__.py").write_text(MAIN)
        # byte code beside each source (zipimport reads no __pycache__): an archive that
        # compiles nothing at start holds less memory; another Python version reads the
        # sources instead
        compileall.compile_dir(
            stage,
            quiet=1,
            legacy=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(
            stage, output, interpreter="/usr/bin/env python3", compressed=True
        )
    return output


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("dist/jobfleet-agent.pyz")
    print(build(target))
