"""`recoverctl man`: the manual page (roff), generated from the command tree so it never drifts."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click

from recoverctl import __version__
from recoverctl.errors import ExitCode


def _roff(text: str) -> str:
    """Given plain text, return it safe for roff: backslashes escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # troff reads its input as Latin-1: other characters (arrows, dashes) go as named glyphs.
    lines = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text).splitlines()
    return "\n".join(f"\\&{line}" if line.startswith((".", "'")) else line for line in lines)


def _help_body(help_text: str) -> list[str]:
    """Given a click help text, return roff paragraphs; click's \\b blocks stay as written."""
    out: list[str] = []
    for paragraph in inspect.cleandoc(help_text).split("\n\n"):
        if paragraph.startswith("\b"):
            out += [".PP", ".nf", _roff(paragraph.lstrip("\b\n")), ".fi"]
        elif paragraph.strip():
            out += [".PP", _roff(" ".join(paragraph.split()))]
    return out


def _options(ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in ctx.command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is not None:
            out += [".TP", f"\\fB{_roff(record[0])}\\fR", _roff(record[1])]
    return out


def _commands(ctx: click.Context) -> Iterator[click.Context]:
    """Yield a context for every leaf command under `ctx`'s group, in help order."""
    group = ctx.command
    assert isinstance(group, click.Group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        default = getattr(command, "default", None)  # `restore SNAPSHOT`: a group's own command form
        if isinstance(default, click.Command):
            yield click.Context(default, info_name=name, parent=ctx)
        if isinstance(command, click.Group) and command.callback is None:
            yield from _commands(sub)
            continue
        yield sub
        if isinstance(command, click.Group):
            yield from _commands(sub)


def manual_page(root: click.Context) -> str:
    """Given the root command's context, return the whole manual page as roff source."""
    command = root.command
    lines = [
        f'.TH RECOVERCTL 1 "" "recoverctl {__version__}" "User Commands"',
        ".SH NAME",
        f"recoverctl \\- {_roff(command.get_short_help_str(limit=200))}",
        ".SH SYNOPSIS",
        ".B recoverctl",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        *_help_body(command.help or ""),
        ".SH OPTIONS",
        *_options(root),
        ".SH COMMANDS",
    ]
    for ctx in _commands(root):
        pieces = " ".join(ctx.command.collect_usage_pieces(ctx))
        lines += [f'.SS "{ctx.command_path}"', f"\\fB{ctx.command_path}\\fR {_roff(pieces)}"]
        lines += _help_body(ctx.command.help or "")
        lines += _options(ctx)
    lines += [".SH EXIT STATUS", ".TS", "l l.", *(f"{int(c)}\t{c.name}" for c in ExitCode), ".TE"]
    lines += [".SH SEE ALSO", "recoverctl completion bash|zsh|fish; README.md and docs/ in the source"]
    return "\n".join(lines) + "\n"


@click.command("man")
@click.pass_context
def man_cmd(ctx: click.Context) -> None:
    """Print recoverctl's manual page (roff): every command, option and exit code.

    \b
    Example:
      recoverctl man | man -l -
      recoverctl man > /usr/local/share/man/man1/recoverctl.1
    """
    click.echo(manual_page(ctx.find_root()), nl=False)


COMMANDS = [man_cmd]
