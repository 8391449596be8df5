from __future__ import annotations

import importlib
import pkgutil

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
