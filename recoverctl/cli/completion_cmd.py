"""`recoverctl completion bash|zsh|fish`: print the shell's completion script."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

# What the script sets to ask recoverctl for completions; click derives it from the program name.
COMPLETE_VAR = "_RECOVERCTL_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (commands, subcommands, options and choices).

    \b
    Example:
      source <(recoverctl completion bash)          # in ~/.bashrc
      recoverctl completion zsh > "${fpath[1]}/_recoverctl"
      recoverctl completion fish > ~/.config/fish/completions/recoverctl.fish
    """
    complete = get_completion_class(shell)
    assert complete is not None  # click ships all three choices
    click.echo(complete(ctx.find_root().command, {}, "recoverctl", COMPLETE_VAR).source())


COMMANDS = [completion_cmd]
