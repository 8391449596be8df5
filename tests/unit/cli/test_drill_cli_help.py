from __future__ import annotations

from click.testing import CliRunner

from recoverctl.cli.main import cli


def test_every_drill_and_status_command_has_an_example() -> None:
    runner = CliRunner()
    for args in (["drill", "run"], ["drill", "history"], ["drill", "report"], ["status"]):
        r = runner.invoke(cli, [*args, "--help"])
        assert r.exit_code == 0, r.output
        assert "Example:" in r.output, args
