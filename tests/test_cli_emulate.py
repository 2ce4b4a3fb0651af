"""``streamkit emulate`` (``streamkit.cli.emulate``): arguments → EmulatorConfig."""

from __future__ import annotations

import pytest

from streamkit.cli import EXIT_USAGE, build_parser, main
from streamkit.cli.emulate import emulator_config
from streamkit.emulator import EmulatorConfig


def test_embed_options_map_to_the_emulator_config() -> None:
    args = build_parser().parse_args([
        "emulate", "--port", "0", "--embed-dim", "32", "--embed-model", "nomic-embed-text",
        "--embed-model", "e2", "--embed-request-ms", "2.5", "--embed-token-us", "20"])
    config = emulator_config(args)
    assert config.embed_dim == 32
    assert config.embed_models == ("nomic-embed-text", "e2")
    assert config.embed_request_cost == pytest.approx(0.0025)
    assert config.embed_token_cost == pytest.approx(20e-6)


def test_embed_defaults_are_the_emulators() -> None:
    config = emulator_config(build_parser().parse_args(["emulate"]))
    default = EmulatorConfig()
    assert (config.embed_models, config.embed_dim, config.embed_request_cost,
            config.embed_token_cost) == (default.embed_models, default.embed_dim,
                                         default.embed_request_cost, default.embed_token_cost)


def test_a_bad_embed_setting_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--embed-dim", "0"]) == EXIT_USAGE
    assert "EmulatorConfig.embed_dim must be >= 1, got 0" in capsys.readouterr().err
