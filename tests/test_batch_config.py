"""BatchConfig (``streamkit.batch.config``): validation, and the one list of batch
options that the CLI, run_batch and the resume command are derived from."""

from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict

import pytest

from streamkit.batch import BatchConfig, run_batch
from streamkit.batch.config import command_words, config_values, flag_of
from streamkit.cli import build_parser
from streamkit.cli.batch import resume_command
from streamkit.config import RetryPolicy, Timeouts
from streamkit.errors import ConfigError

# A value other than the default for every option the resume command carries.
# A new BatchConfig field needs one here (and a Flag, or None for library-only).
EXAMPLES: Dict[str, Any] = {
    "inputs": "prompts file.jsonl",
    "output": "out.jsonl",
    "model": "llama3.2",
    "hosts": [("http://a:11434", 2), "http://b:11434"],
    "dialect": "openai",
    "workers": 3,
    "system": "be brief",
    "options": {"temperature": 0, "stop": ["\n"], "note": "two words"},
    "format": {"type": "object", "properties": {"x": {"type": "string"}}},
    "think": "low",
    "ordered": True,
    "skip_invalid": True,
    "cache": "cache.db",
    "input_format": "jsonl",
    "prompt_column": "text",
    "id_column": "key",
    "retry": RetryPolicy(attempts=5),
    "timeouts": Timeouts(total=30.5),
    "progress": False,
    "embed": True,
    "embed_batch": 16,
    "embed_truncate": False,
    "embed_dimensions": 256,
    "output_format": "npy",
    "ray_address": "auto",
    "ray_actors": 3,
}
LIBRARY_ONLY = {"max_problems"}
# The resume command continues the run: no --no-resume; and it never shows a key.
NOT_RESUMED = {"resume", "api_key"}


def _batch_parser_dests() -> Dict[str, Any]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    batch = sub.choices["batch"]  # type: ignore[index]
    return {action.dest: action for action in batch._actions}


def _parse(words: list) -> BatchConfig:  # type: ignore[type-arg]
    args = build_parser().parse_args(["batch", *words])
    return BatchConfig(**config_values(vars(args)))


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must not be the prompt file"):
        BatchConfig("same.jsonl", "same.jsonl")
    with pytest.raises(ConfigError, match="workers"):
        BatchConfig("p.jsonl", "o.jsonl", workers=0)
    with pytest.raises(ConfigError, match="workers must be an int >= 1, got True"):
        BatchConfig("p.jsonl", "o.jsonl", workers=True)
    with pytest.raises(ConfigError, match="output must be a file"):
        BatchConfig("p.jsonl", "-")


def test_none_timeouts_and_retry_mean_the_defaults() -> None:
    config = BatchConfig("p.jsonl", "o.jsonl", timeouts=None, retry=None)  # type: ignore[arg-type]
    assert (config.timeouts, config.retry) == (Timeouts(), RetryPolicy())


def test_every_field_says_how_the_command_line_spells_it() -> None:
    dests = _batch_parser_dests()
    for f in fields(BatchConfig):
        assert "cli" in f.metadata, f"BatchConfig.{f.name} has no cli metadata"
        if flag_of(f) is None:
            assert f.name in LIBRARY_ONLY, f"BatchConfig.{f.name} is not on the command line"
        else:
            assert f.name in dests, f"streamkit batch has no argument for {f.name}"


def test_every_option_round_trips_through_the_resume_command() -> None:
    carried = {f.name for f in fields(BatchConfig)} - LIBRARY_ONLY - NOT_RESUMED
    assert set(EXAMPLES) == carried, "give every batch option an example above"
    config = BatchConfig(**EXAMPLES)
    words = command_words(config)
    assert _parse(words) == config
    # each option alone, too: no option depends on another to be rendered
    for name, value in EXAMPLES.items():
        if name in ("inputs", "output"):
            continue
        single = BatchConfig("p.jsonl", "o.jsonl", **{name: value})
        assert _parse(command_words(single)) == single, name


def test_defaults_are_left_out_and_no_resume_is_dropped() -> None:
    config = BatchConfig("p.jsonl", "o.jsonl", resume=False, workers=8)
    assert command_words(config) == ["p.jsonl", "-o", "o.jsonl"]
    assert _parse(["p.jsonl", "-o", "o.jsonl", "--no-resume"]).resume is False


def test_resume_command_is_quoted_and_keeps_the_hosts_worker_rule() -> None:
    typed = BatchConfig("my prompts.jsonl", "o.jsonl", hosts=[("http://a", 2)], workers=2)
    assert resume_command(typed) == ("streamkit batch 'my prompts.jsonl' -o o.jsonl "
                                     "--host http://a=2")
    # --workers 8 given with hosts that add up to 2: the 8 must survive
    explicit = BatchConfig("p.jsonl", "o.jsonl", hosts=[("http://a", 2)], workers=8)
    command = resume_command(explicit)
    assert command.endswith("-w 8")
    assert _parse(shlex.split(command)[2:]).workers == 8


def test_command_line_values_become_fields() -> None:
    config = _parse(["p.jsonl", "-o", "o.jsonl", "--retries", "0", "--timeout", "2",
                     "--option", "num_predict=4", "--option", "stop=x", "--think",
                     "--format", "json", "-q", "--host", "builtin=3"])
    assert config.retry == RetryPolicy(attempts=1)
    assert config.timeouts == Timeouts(total=2.0)
    assert config.options == {"num_predict": 4, "stop": "x"}
    assert (config.think, config.format, config.progress) == (True, "json", False)
    assert config.hosts == [("builtin", 3)]


def test_run_batch_takes_config_fields_by_name(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        run_batch("p.jsonl", str(tmp_path / "o.jsonl"), no_such_option=1)
    with pytest.raises(ConfigError, match="workers must be an int >= 1, got 0"):
        run_batch("p.jsonl", str(tmp_path / "o.jsonl"), workers=0)
    base = BatchConfig("unused.jsonl", "unused-out.jsonl", workers=0 + 1)
    with pytest.raises(ConfigError, match="workers must be an int >= 1, got 0"):
        run_batch("p.jsonl", str(tmp_path / "o.jsonl"), config=base, workers=0)
