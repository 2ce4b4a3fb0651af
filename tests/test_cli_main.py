"""``streamkit.cli.main``: subcommand dispatch and the one error → exit-code boundary."""

from __future__ import annotations

import argparse

import pytest

from streamkit.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, main
from streamkit.cli.common import report_error
from streamkit.errors import ConfigError, StreamInterrupted


def test_no_command_prints_help_and_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().err


def test_a_commands_usage_errors_are_printed_whole_after_its_name(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--parallel", "0"]) == EXIT_USAGE
    assert capsys.readouterr().err == ("streamkit emulate: EmulatorConfig.parallel must be "
                                       ">= 1, got 0\n")


@pytest.mark.parametrize(("exc", "code", "line"), [
    (ConfigError("bad value\nsecond line"), EXIT_USAGE, "streamkit: error: bad value\n"),
    (StreamInterrupted("cut", partial="x"), EXIT_FAILED, "streamkit: error: cut\n"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "streamkit: interrupted\n"),
])
def test_other_errors_are_one_line_with_their_exit_code(
        capsys: pytest.CaptureFixture[str], exc: BaseException, code: int, line: str) -> None:
    args = argparse.Namespace(command="chat")
    assert report_error(exc, args) == code
    assert capsys.readouterr().err == line
