"""One CLI grammar: every command that prints a result takes `--json` after its name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click

from recoverctl.cli.main import cli as root
from tests.conftest import Cli
from tests.fixtures.terminal import run_on_pty
from tests.inproc_cli import InProcessCli

# Leaf commands that print no result to parse: `serve` runs until stopped, `completion` prints a
# shell script, `man` a manual page.
NO_RESULT = {("serve",), ("completion",), ("man",)}


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join([*path, name])} is listed but does not load"
        if isinstance(command, click.Group):
            found += _leaves(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def test_every_leaf_command_that_prints_a_result_accepts_json() -> None:
    leaves = _leaves(root)
    assert len(leaves) > 40  # the walk saw the whole tree, lazily loaded groups included
    missing = [
        " ".join(path)
        for path, command in leaves
        if path not in NO_RESULT and not any("--json" in getattr(p, "opts", ()) for p in command.params)
    ]
    assert missing == []


def test_safe_commands_print_json_after_their_name(cli: Cli, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    cli.write_config({"repository": str(repository), "catalog": f"sqlite:///{tmp_path / 'catalog.db'}"})
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    cli("init", check=0)
    run = InProcessCli(cli)
    probe = tmp_path / "probe"
    probe.mkdir()
    for args in (
        ("config", "check"),
        ("config", "show"),
        ("catalog", "info"),
        ("catalog", "migrate"),
        ("storage", "check", str(probe)),
        ("status",),
        ("snapshots",),
        ("audit",),
        ("incidents",),
    ):
        out = run(*args, "--json", check=0).stdout
        assert isinstance(json.loads(out), dict | list), f"{' '.join(args)} --json: {out!r}"


def test_restore_help_shows_both_forms_under_the_typed_name(cli: Cli) -> None:
    run = InProcessCli(cli)
    usage = run("restore", "--help", check=0).stdout.splitlines()
    assert usage[0] == "Usage: recoverctl restore [OPTIONS] SNAPSHOT"
    assert usage[1].split() == ["recoverctl", "restore", "postgres", "[OPTIONS]", "[SNAPSHOT]"]
    help_text = "\n".join(usage)
    assert "--target PATH" in help_text and "postgres" in help_text
    assert "restore restore" not in run("restore", "latest", "--help", check=0).stdout
    assert "Usage: recoverctl restore [OPTIONS] SNAPSHOT" in run("restore", check=2).stderr


def test_mistyped_command_suggests_the_closest_exit_2(cli: Cli) -> None:
    r = cli("snapshot")
    assert r.code == 2
    assert "No such command 'snapshot'. Did you mean 'snapshots'?" in r.stderr
    assert "Did you mean 'snapshots'?" in cli("--json", "snapshot", check=2).error_json()["message"]
    assert "Did you mean" not in cli("zzzzzz", check=2).stderr  # nothing close: no guess
    assert "No such command 'inf'. Did you mean 'info'?" in cli("catalog", "inf", check=2).stderr


def _on_pty(cli: Cli, *args: str, env: dict[str, str] | None = None) -> str:
    """Run recoverctl with stdout and stderr on a pseudo-terminal; return what it wrote."""
    return run_on_pty(cli, *args, env=env)[0].decode(errors="replace")


def test_no_color_and_no_color_flag_strip_escapes_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    cli.write_config({"repository": str(tmp_path / "repo"), "catalog": f"sqlite:///{tmp_path / 'c.db'}"})
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    cli("init", check=0)
    commands = [("status",), ("--config", str(tmp_path / "missing.yaml"), "status"), ("--help",)]
    commands += [("restore", "--help"), ("snapshot",), ("config", "check")]
    assert "\x1b[" in _on_pty(cli, "status")  # the terminal is real: colour shows without the opt-out
    for args in commands:
        for out in (_on_pty(cli, *args, env={"NO_COLOR": "1"}), _on_pty(cli, "--no-color", *args)):
            assert out.strip() and "\x1b" not in out, f"{' '.join(args)}: {out!r}"


def _complete(cli: Cli, script: str, *words: str) -> list[str]:
    """Source `script` in bash, complete the last of `words` as bash would; return the candidates."""
    ask = f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; COMPREPLY=()"
    run = f'source /dev/stdin; {ask}; _recoverctl_completion recoverctl; printf "%s\\n" "${{COMPREPLY[@]}}"'
    env = {**cli.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli.env['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", run], input=script, capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.split()


def test_completion_scripts_and_bash_completes_commands(cli: Cli) -> None:
    script = cli("completion", "bash", check=0).stdout
    assert _complete(cli, script, "recoverctl", "sna") == ["snapshots"]
    assert _complete(cli, script, "recoverctl", "catalog", "in") == ["info"]
    assert "--target" in _complete(cli, script, "recoverctl", "restore", "latest", "--tar")
    assert "compdef recoverctl" in cli("completion", "zsh", check=0).stdout
    assert "complete --no-files --command recoverctl" in cli("completion", "fish", check=0).stdout
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in cli("completion", "tcsh", check=2).stderr


def test_backup_files_without_paths_backs_up_the_sources_configured_paths(cli: Cli, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "photo.jpg").write_bytes(b"jpeg" * 100)
    (uploads / "partial.tmp").write_bytes(b"half")
    config = {
        "repository": str(tmp_path / "repo"),
        "sources": {"uploads": {"type": "files", "paths": [str(uploads)], "exclude": ["*.tmp"]}},
    }
    cli.write_config(config)
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    run = InProcessCli(cli)
    run("init", check=0)
    run("backup", "files", "--source", "uploads", "--json", check=0)
    (snapshot,) = run("snapshots", "--json", check=0).json()
    assert snapshot["paths"] == [str(uploads)] and snapshot["source"] == "uploads"
    listed = run("ls", "latest", "--json", check=0).stdout
    assert "photo.jpg" in listed and "partial.tmp" not in listed  # the source's exclude applied
    text = run("backup", "files", "--source", "uploads", check=0).stdout
    assert re.search(r"saved: \d+ B \(\d+(\.\d)? (B|KiB) stored\)", text), text  # sizes in units
    r = run("--json", "backup", "files", "--source", "ghost", check=2)
    assert "unknown source 'ghost'" in r.error_json()["message"]
    cli.write_config({"repository": str(tmp_path / "repo")})
    assert "nothing to back up: give PATHS" in run("backup", "files", check=2).stderr


def test_config_check_refuses_a_pathless_backup_of_a_missing_source(cli: Cli, tmp_path: Path) -> None:
    schedule = {"name": "nightly", "cron": "0 3 * * *"}
    config = {
        "repository": str(tmp_path / "repo"),
        "sources": {"uploads": {"type": "files", "paths": [str(tmp_path)]}},
        "schedules": [{**schedule, "job": "backup files --source uploads"}],
    }
    cli.write_config(config)
    cli("config", "check", check=0)
    config["schedules"] = [{**schedule, "job": "backup files --source ghost"}]
    cli.write_config(config)
    r = cli("config", "check", check=2)
    assert "schedule 'nightly'" in r.stderr and "source 'ghost', which is not in sources" in r.stderr


def test_commands_named_in_contrib_exist() -> None:
    from recoverctl.cli.config_cmd import parse_job

    root = Path(__file__).resolve().parents[2]
    named = {
        m for f in (root / "contrib").iterdir() for m in re.findall(r"'recoverctl ([^'%]+)'", f.read_text())
    }
    assert "alerts" in named
    for line in named:
        parse_job(line)  # raises ValueError naming the unknown command or option


def test_manual_page_covers_every_command_and_renders_cleanly(cli: Cli, tmp_path: Path) -> None:
    page = tmp_path / "recoverctl.1"
    page.write_text(cli("man", check=0).stdout)
    groff = subprocess.run(
        ["groff", "-man", "-t", "-Tutf8", "-ww", str(page)], capture_output=True, text=True, check=True
    )
    assert groff.stderr == ""  # no warnings: every character and request is valid roff
    rendered = re.sub(r".\x08", "", groff.stdout)  # drop overstrike (bold) so words compare
    for path, _command in _leaves(root):
        assert f"recoverctl {' '.join(path)}" in rendered, path
    assert "recoverctl restore [OPTIONS] SNAPSHOT" in rendered and "--target PATH" in rendered
    assert "VERIFICATION_FAILED" in rendered  # the exit codes
