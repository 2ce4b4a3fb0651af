"""BatchConfig: the one list of batch options, each with its command-line spelling.

Every option of a batch run is a field of :class:`BatchConfig`. A field's
``metadata["cli"]`` is a :class:`Flag` saying how ``streamkit batch`` spells
it; ``None`` marks a library-only option. From this one list come:

- ``run_batch(inputs, output, **options)``: ``options`` are BatchConfig fields;
- the ``streamkit batch`` arguments (built from the Flags by the CLI);
- the printed resume command (:func:`command_words`).

To add an option, add a field here with its Flag (and an example value to
the round-trip test in ``tests/test_batch_config.py``); the CLI, ``run_batch``
and the resume command pick it up.

The text parsers below raise :class:`~streamkit.errors.ConfigError`; the CLI
turns that into an argparse usage error.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..config import HostSpec, RetryPolicy, Secret, Timeouts, check_count
from ..errors import ConfigError
from ..records import ResponseCache
from .input import FORMATS, detect_format
from .output import errors_path
from .promptline import THINK_LEVELS

__all__ = ["EMBED_BATCH", "MAX_PROBLEMS", "OUTPUT_FORMATS", "BatchConfig", "Flag",
           "command_words", "config_values", "flag_of", "parse_format", "parse_host",
           "parse_option", "parse_think"]

MAX_PROBLEMS = 20
EMBED_BATCH = 64  # inputs per embed request: where benchmarks/embed.py's gain levels off
OUTPUT_FORMATS = ("jsonl", "npy", "parquet")


# --- one option's text form --------------------------------------------------------


def parse_option(text: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` → ``(key, value)``; VALUE is JSON when it parses (numbers, lists)."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ConfigError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, booleans, lists: "stop=[\"\\n\"]"
    except ValueError:
        return key, value


def parse_host(text: str) -> HostSpec:
    """``URL`` or ``URL=N`` (N parallel slots on that host)."""
    url, eq, count = text.rpartition("=")
    if eq and count.isdigit() and url:
        if int(count) < 1:
            raise ConfigError(f"host slots must be >= 1, got {text!r}")
        return url, int(count)
    return text


def parse_think(text: str) -> Union[bool, str]:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in THINK_LEVELS:
        return lowered
    raise ConfigError(f"--think takes true, false, low, medium or high, got {text!r}")


def parse_format(text: str) -> Union[str, Mapping[str, Any]]:
    """``json``, any other name, or a JSON schema given as ``{...}``."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        schema: Mapping[str, Any] = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--format is not valid JSON: {exc}") from exc
    return schema


def _same(value: Any) -> Any:
    return value


def _text(value: Any) -> List[str]:
    return [str(value)]


def _list_or_none(values: Sequence[Any]) -> Optional[List[Any]]:
    return list(values) or None


def _host_words(hosts: Sequence[HostSpec]) -> List[str]:
    return [h if isinstance(h, str) else f"{h[0]}={h[1]}" for h in hosts]


def _option_words(options: Mapping[str, Any]) -> List[str]:
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in options.items()]


def _format_words(fmt: Union[str, Mapping[str, Any]]) -> List[str]:
    return [fmt if isinstance(fmt, str) else json.dumps(fmt)]


@dataclass(frozen=True)
class Flag:
    """How one BatchConfig field is spelled on the ``streamkit batch`` command line.

    - ``names``: the option strings, short first (``()``: the positional PROMPTS).
    - ``parse``: one argv word → one value; None: the word itself. Its
      ConfigError is shown as is; a ValueError (``int``) as argparse's
      "invalid int value".
    - ``switch``: the flag takes no word and sets the field to ``const``.
      Otherwise a non-None ``const`` is the value of the flag given without
      a word (``--think``).
    - ``repeat``: the flag may be given several times; ``to_field`` gets the list.
    - ``to_field``: what the command line collected → the field's value
      (None: the field keeps its default).
    - ``to_words``: the field's value → the words after the flag (the
      inverse of ``parse`` and ``to_field``, for the resume command).
    - ``resume``: carried into the resume command (``--no-resume`` is not).
    """

    names: Tuple[str, ...]
    help: Optional[str] = None
    metavar: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None
    parse: Optional[Callable[[str], Any]] = None
    switch: bool = False
    const: Any = None
    repeat: bool = False
    to_field: Callable[[Any], Any] = _same
    to_words: Callable[[Any], List[str]] = _text
    resume: bool = True

    def argv(self, value: Any) -> List[str]:
        """The words that give the field ``value`` (a switch not set: none)."""
        if self.switch:
            return [self.names[0]] if value == self.const else []
        words = self.to_words(value)
        if not self.names:
            return words
        return [part for word in words for part in (self.names[0], word)]


def _cli(flag: Optional[Flag]) -> Dict[str, Any]:
    """A field's metadata: its command-line Flag (None: a library-only option)."""
    return {"cli": flag}


@dataclass(frozen=True)
class BatchConfig:
    """Everything a batch run needs; validated on construction (ConfigError).

    - ``inputs``: a ``.jsonl``, ``.txt`` or ``.csv`` file, or ``"-"`` for stdin.
    - ``output``: the results file (JSONL); failures go to ``errors``.
    - ``model``, ``system``, ``options``, ``format``, ``think``: defaults for
      lines that do not set them (a line's ``options`` are merged over these).
    - ``hosts``: servers, as URLs or ``(url, parallel)`` pairs (Dispatcher
      routing); None: ``$OLLAMA_HOST`` or the default.
    - ``dialect``: ``"ollama"`` or ``"openai"`` (Client setting).
    - ``api_key``: a string or :class:`~streamkit.config.Secret`, the bearer token;
      None: the dialect's environment variable (Client setting). Never
      written into the resume command.
    - ``workers``: requests in flight at once.
    - ``ordered``: write the output in input order (a bounded reordering
      buffer holds early results); otherwise in completion order.
    - ``skip_invalid``: run the good lines when some are bad.
    - ``prompt_column``, ``id_column``: the CSV columns read as prompt and id.
    - ``cache``: a :class:`~streamkit.batch.cache.SQLiteCache`, any
      ResponseCache, or a path to open one; hits are written with
      ``"cached": true``.
    - ``resume``: skip ids already in ``output`` (default). False starts
      over: the output and error files are truncated.
    - ``retry``, ``timeouts``: per request (Client settings); None: the defaults.
    - ``progress``: a tqdm bar on stderr; None: only when stderr is a TTY.
    - ``ray_address``, ``ray_actors``: run the requests on that many Ray
      actors (``"local"`` starts Ray, ``"auto"`` joins a cluster); this
      process still writes the files. Runs through ``streamkit.ray.run_batch``
      (or ``streamkit batch --ray``), which supplies the executor.
    - ``max_problems``: how many bad lines to list (all are counted).
    - ``embed``: embed each line's text instead of generating; lines go in
      groups of up to ``embed_batch`` inputs per request. ``embed_truncate``
      False makes an input over the context length fail (only its own line)
      instead of being cut; ``embed_dimensions`` asks for shorter vectors.
      ``output_format`` ``npy`` or ``parquet`` (embed only) also writes the
      vectors as a matrix at the end of the run (see :mod:`.embed`).
    """

    inputs: str = field(metadata=_cli(Flag(
        (), "a .jsonl, .txt or .csv file, or - for stdin", metavar="PROMPTS")))
    output: str = field(metadata=_cli(Flag(
        ("-o", "--output"), "results file", metavar="OUT.jsonl")))
    model: Optional[str] = field(default=None, metadata=_cli(Flag(
        ("-m", "--model"), "default model (a line's \"model\" overrides it)")))
    hosts: Optional[Sequence[HostSpec]] = field(default=None, metadata=_cli(Flag(
        ("--host",), "a server (repeatable), with N parallel slots; 'builtin' starts the "
                     "emulator in-process (default: $OLLAMA_HOST)",
        metavar="URL[=N]", parse=parse_host, repeat=True, to_field=_list_or_none,
        to_words=_host_words)))
    dialect: str = field(default="ollama", metadata=_cli(Flag(
        ("--dialect",), "wire dialect (default: ollama); with openai against llama.cpp give "
                        "--max-tokens", choices=("ollama", "openai"))))
    api_key: Union[Secret, str, None] = field(default=None, repr=False, metadata=_cli(Flag(
        ("--api-key",), "sent as 'Authorization: Bearer KEY' (default: $OLLAMA_API_KEY, or "
                        "$OPENAI_API_KEY with --dialect openai); never printed",
        metavar="KEY", parse=Secret, resume=False)))
    workers: int = field(default=8, metadata=_cli(Flag(
        ("-w", "--workers"), "requests in flight (default: the sum of the hosts' N, else 8)",
        parse=int)))
    system: Optional[str] = field(default=None, metadata=_cli(Flag(
        ("--system",), "default system prompt")))
    options: Optional[Mapping[str, Any]] = field(default=None, metadata=_cli(Flag(
        ("-O", "--option"), "an Ollama option, e.g. -O temperature=0", metavar="KEY=VALUE",
        parse=parse_option, repeat=True, to_field=lambda pairs: dict(pairs) or None,
        to_words=_option_words)))
    format: Optional[Union[str, Mapping[str, Any]]] = field(default=None, metadata=_cli(Flag(
        ("--format",), "'json' or a JSON schema", to_field=parse_format,
        to_words=_format_words)))
    think: Optional[Union[bool, str]] = field(default=None, metadata=_cli(Flag(
        ("--think",), "ask thinking models to think (or low/medium/high)", metavar="LEVEL",
        parse=parse_think, const=True, to_words=lambda v: [str(v).lower()])))
    ordered: bool = field(default=False, metadata=_cli(Flag(
        ("--ordered",), "write OUT in input order", switch=True, const=True)))
    skip_invalid: bool = field(default=False, metadata=_cli(Flag(
        ("--skip-invalid",), "run the good lines when some are bad (lists the bad ones)",
        switch=True, const=True)))
    cache: Union[ResponseCache, str, None] = field(default=None, metadata=_cli(Flag(
        ("--cache",), "SQLite response cache: identical requests are answered from it",
        metavar="PATH", to_words=lambda c: [c] if isinstance(c, str) else [])))
    resume: bool = field(default=True, metadata=_cli(Flag(
        ("--no-resume",), "start over: truncate OUT and its error file", switch=True,
        const=False, resume=False)))
    input_format: Optional[str] = field(default=None, metadata=_cli(Flag(
        ("--input-format",),
        "the format of PROMPTS (default: from its extension; stdin: jsonl)", choices=FORMATS)))
    prompt_column: str = field(default="prompt", metadata=_cli(Flag(
        ("--prompt-column",), "CSV: the column holding the prompt (default: prompt)",
        metavar="NAME")))
    id_column: str = field(default="id", metadata=_cli(Flag(
        ("--id-column",), "CSV: the column holding the id (default: id; none: line numbers)",
        metavar="NAME")))
    retry: RetryPolicy = field(default_factory=RetryPolicy, metadata=_cli(Flag(
        ("--retries",), "retries per request before its first token (default 2)", metavar="N",
        parse=int, to_field=lambda n: RetryPolicy(attempts=n + 1),
        to_words=lambda r: [str(r.attempts - 1)])))
    timeouts: Timeouts = field(default_factory=Timeouts, metadata=_cli(Flag(
        ("--timeout",), "limit on each request's total time, in seconds", metavar="S",
        parse=float, to_field=lambda s: Timeouts(total=s) if s else None,
        to_words=lambda t: [] if t.total is None else [str(t.total)])))
    progress: Optional[bool] = field(default=None, metadata=_cli(Flag(
        ("-q", "--quiet"), "no progress bar", switch=True, const=False)))
    ray_address: Optional[str] = field(default=None, metadata=_cli(Flag(
        ("--ray",), "run the requests on Ray actors (needs streamkit[ray]): 'auto' joins "
        "the running cluster, no ADDRESS starts a local one; see docs/ray.md",
        metavar="ADDRESS", const="local")))
    ray_actors: int = field(default=2, metadata=_cli(Flag(
        ("--ray-actors",), "Ray actors sharing the hosts' slots (default 2)", metavar="N",
        parse=int)))
    max_problems: int = field(default=MAX_PROBLEMS, metadata=_cli(None))  # library only
    embed: bool = field(default=False, metadata=_cli(Flag(
        ("--embed",), "embed each line's text (an embedding model: -m) instead of generating",
        switch=True, const=True)))
    embed_batch: int = field(default=EMBED_BATCH, metadata=_cli(Flag(
        ("--embed-batch",), f"with --embed: inputs per request (default {EMBED_BATCH})",
        metavar="N", parse=int)))
    embed_truncate: Optional[bool] = field(default=None, metadata=_cli(Flag(
        ("--no-truncate",), "with --embed: an input over the context length fails instead "
                            "of being cut", switch=True, const=False)))
    embed_dimensions: Optional[int] = field(default=None, metadata=_cli(Flag(
        ("--dimensions",), "with --embed: shorter vectors of N components", metavar="N",
        parse=int)))
    output_format: str = field(default="jsonl", metadata=_cli(Flag(
        ("--output-format",), "with --embed: also write the vectors as OUT.npy (+ ids) or "
                              "Parquet at the end (default jsonl: OUT only)",
        choices=OUTPUT_FORMATS)))

    def __post_init__(self) -> None:
        for name, default in (("timeouts", Timeouts), ("retry", RetryPolicy)):
            if getattr(self, name) is None:  # None given: the default
                object.__setattr__(self, name, default())
        if not isinstance(self.output, str) or not self.output or self.output == "-":
            raise ConfigError("the output must be a file path (-o OUT.jsonl)")
        if self.inputs != "-" and os.path.abspath(self.inputs) == os.path.abspath(self.output):
            raise ConfigError("the output file must not be the prompt file")
        check_count("workers", self.workers)
        check_count("ray_actors", self.ray_actors)
        for name in ("prompt_column", "id_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(f"{name} must be a column name, got {getattr(self, name)!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"model must be a non-empty string, got {self.model!r}")
        if self.options is not None and not isinstance(self.options, Mapping):
            raise ConfigError("options must be a dict of Ollama option names")
        detect_format(self.inputs, self.input_format)  # raises for an unknown format
        check_count("embed_batch", self.embed_batch)
        if self.embed_dimensions is not None:
            check_count("embed_dimensions", self.embed_dimensions)
        if self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format {self.output_format!r}; use one of "
                              f"{', '.join(OUTPUT_FORMATS)}")

    @property
    def errors(self) -> str:
        return errors_path(self.output)

    @property
    def format_name(self) -> str:
        return detect_format(self.inputs, self.input_format)


def flag_of(f: Field[Any]) -> Optional[Flag]:
    """The field's Flag; None for a library-only option.

    Raises:
        KeyError: the field has no ``cli`` metadata at all (a new field must
            say how the command line spells it, or None).
    """
    flag: Optional[Flag] = f.metadata["cli"]
    return flag


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def config_values(given: Mapping[str, Any]) -> Dict[str, Any]:
    """BatchConfig keywords from what a command line gave, by field name.

    ``given`` maps field names to what argparse collected; None (or a name
    that is absent) leaves the field at its default.

    Raises:
        ConfigError: a value ``to_field`` rejects (``--format`` not JSON).
    """
    values: Dict[str, Any] = {}
    for f in fields(BatchConfig):
        flag = flag_of(f)
        raw = given.get(f.name)
        if flag is None or raw is None:
            continue
        value = flag.to_field(raw)
        if value is not None:
            values[f.name] = value
    return values


def command_words(config: BatchConfig, **defaults: Any) -> List[str]:
    """The ``streamkit batch`` arguments that rebuild ``config`` (its resume command).

    A field equal to its default is left out; ``defaults`` replaces a
    field's default where the command line computes its own (the CLI's
    ``workers`` follows the hosts).
    """
    words: List[str] = []
    for f in fields(config):
        flag = flag_of(f)
        if flag is None or not flag.resume:
            continue
        value = getattr(config, f.name)
        default = defaults.get(f.name, _default(f))
        if default is MISSING or value != default:
            words += flag.argv(value)
    return words
