from __future__ import annotations

import importlib
import pkgutil

import click

import recoverctl.cli
from recoverctl.cli.main import COMMAND_MODULES, cli


def test_every_command_module_is_registered_and_every_name_resolves() -> None:
    registered: dict[str, set[str]] = {}
    for info in pkgutil.iter_modules(recoverctl.cli.__path__):
        module = importlib.import_module(f"recoverctl.cli.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            registered.setdefault(command.name, set()).add(info.name)
    assert {name: set(mods) for name, mods in COMMAND_MODULES.items()} == registered
    for name in COMMAND_MODULES:
        assert cli.get_command(None, name) is not None, name  # type: ignore[arg-type]


def test_every_subcommand_resolves_in_a_fresh_process() -> None:
    # A module that adds a subcommand to another module's group must be listed for that group's
    # name, or the subcommand exists only when something else imported the module first.
    import json
    import subprocess
    import sys
    from pathlib import Path

    for info in pkgutil.iter_modules(recoverctl.cli.__path__):
        importlib.import_module(f"recoverctl.cli.{info.name}")
    groups = {
        name: sorted(cmd.commands)
        for name in COMMAND_MODULES
        if isinstance(cmd := cli.get_command(None, name), click.Group)  # type: ignore[arg-type]
    }
    probe = (
        "import json, sys; from recoverctl.cli.main import cli; g = cli.get_command(None, sys.argv[1]); "
        "print(json.dumps(sorted(g.commands)))"
    )
    root = Path(recoverctl.cli.__file__).parents[2]
    procs = {
        name: subprocess.Popen([sys.executable, "-c", probe, name], stdout=subprocess.PIPE, cwd=root)
        for name in groups
    }
    fresh = {name: json.loads(p.communicate(timeout=60)[0]) for name, p in procs.items()}
    assert fresh == groups
