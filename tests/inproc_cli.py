"""Run the recoverctl CLI in this process (same argv, env, exit codes and output as the subprocess
`cli` fixture) to spare a Python start-up per call. Use the subprocess `cli` for signals and crashes."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

from tests.conftest import Cli, CliResult


class InProcessCli:
    def __init__(self, base: Cli):
        self.base = base
        self.env = base.env
        self.home = base.home

    def write_config(self, data: dict[str, Any] | str) -> Path:
        return self.base.write_config(data)

    def __call__(self, *args: str, env: dict[str, str] | None = None, check: int | None = None) -> CliResult:
        from recoverctl.cli.main import main

        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        err = io.StringIO()
        merged = {**self.env, **(env or {})}
        code = 0
        cwd = os.getcwd()
        with (
            mock.patch.dict(os.environ, merged, clear=True),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            os.chdir(self.home)
            try:
                main(list(args))
            except SystemExit as e:
                code = int(e.code or 0)
            finally:
                os.chdir(cwd)
                sys.stdout.flush()
        out.flush()
        stdout = out.buffer.getvalue().decode(errors="replace")  # type: ignore[attr-defined]
        result = CliResult(code, stdout, err.getvalue())
        if check is not None and result.code != check:
            raise AssertionError(
                f"recoverctl {' '.join(args)} exited {result.code}, expected {check}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result
