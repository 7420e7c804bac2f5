"""A command imports what it needs, not what every command needs (engine/cli/main.py
`_lazy`): the parser and `warden worker` load none of the engine's services, whose imports
were half of a worker's start (bench/README.md, session 19)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

main_module = importlib.import_module("engine.cli.main")

# engine.cli.main the module (the package exports its function `main` under that name)
CLI = "import importlib\nmain = importlib.import_module('engine.cli.main')\n"
SERVICES = ("engine.runs.services", "engine.governance.policy", "engine.scheduling.scheduler",
            "engine.definitions.model", "api")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(out.stdout.split())


def test_the_parser_and_the_worker_command_load_none_of_the_services() -> None:
    loaded = _loaded_after(f"{CLI}main._parser()\n"
                           "import engine.cli.worker, engine.worker.runner")
    assert "engine.cli.worker" in loaded and "engine.worker.runner" in loaded
    assert not [name for name in SERVICES if name in loaded]


def test_every_command_names_a_command_its_module_holds() -> None:
    """Each subcommand's lazy reference resolves: its module has a coroutine function of
    that name (or, for approve and reject, the function that makes one)."""
    found = []
    for parser in main_module._all_subparsers(main_module._parser()):
        command = parser.get_default("func")
        target = getattr(importlib.import_module(command.__module__), command.__name__)
        if command.__name__ == "decide_command":
            target = target(True)
        assert inspect.iscoroutinefunction(target), (parser.prog, command.__name__)
        found.append(command.__name__)
    assert "cmd_worker" in found and "cmd_serve" in found and len(found) > 30
