"""``streamkit chat`` and ``streamkit generate``: print a model's answer as it streams."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, TextIO

from ..batch.config import parse_format, parse_option, parse_think
from ..errors import ConfigError, ServerBusy, StreamError, StreamTimeout
from .common import (
    EXIT_OK,
    add_host_argument,
    add_max_tokens_argument,
    argtype,
    open_client,
    print_error,
)

if TYPE_CHECKING:
    from ..conversation import Conversation
    from ..stream import Stream


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="model name, e.g. llama3.2")
    parser.add_argument("-s", "--system", default=None, help="system prompt")
    parser.add_argument("-O", "--option", action="append", type=argtype(parse_option),
                        default=[], metavar="KEY=VALUE",
                        help="an Ollama option, e.g. -O temperature=0 -O num_predict=64")
    add_max_tokens_argument(parser, "option")
    parser.add_argument("--format", type=argtype(parse_format), default=None,
                        metavar="json|SCHEMA", help="'json', or a JSON schema the answer follows")
    parser.add_argument("--think", type=argtype(parse_think), nargs="?", const=True,
                        default=None, metavar="LEVEL",
                        help="ask a thinking model to think (or true/false/low/medium/high)")
    parser.add_argument("--image", action="append", dest="images", default=[],
                        metavar="FILE", help="an image for a multimodal model (repeatable)")
    add_host_argument(parser)


def options(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    return dict(args.option) if args.option else None


def read_images(paths: List[str]) -> Optional[List[str]]:
    """The image files' bytes, base64-encoded as Ollama expects; None for no files.

    Raises:
        ConfigError: a file cannot be read (names it).
    """
    images = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                images.append(base64.b64encode(handle.read()).decode("ascii"))
        except OSError as exc:
            raise ConfigError(f"cannot read image {path!r}: {exc.strerror}") from exc
    return images or None


def read_prompt(prompt: Optional[str], stdin: TextIO) -> Optional[str]:
    """The prompt: ``prompt`` as given, or all of ``stdin`` for ``-``; None for none.

    Raises:
        ConfigError: ``-`` (or a piped stdin) gave no text.
    """
    if prompt != "-":
        return prompt
    text = stdin.read()
    if not text.strip():
        raise ConfigError("the prompt read from stdin is empty")
    return text


def print_stream(stream: Stream, out: TextIO) -> None:
    """Write the stream's text to ``out`` as it arrives, then a newline.

    Raises the stream's error; KeyboardInterrupt cancels the stream first.
    """
    wrote = False
    with stream:
        try:
            for chunk in stream:
                if chunk.text:
                    out.write(chunk.text)
                    out.flush()
                    wrote = True
        except BaseException:
            stream.cancel()  # Ctrl-C: the server stops generating (a no-op if it ended)
            if wrote:  # end the partial answer's line; no stray blank line otherwise
                out.write("\n")
                out.flush()
            raise
    out.write("\n")
    out.flush()


def chat_loop(conversation: Conversation, lines: Iterable[str], out: TextIO,
              err: TextIO, *, prompt: str = "") -> int:
    """The interactive chat: one answer per input line, keeping the history.

    Ctrl-C during an answer cancels that answer only; EOF or ``/bye`` ends
    the loop (exit 0). Ctrl-C while waiting for input propagates.
    """
    iterator = iter(lines)
    while True:
        if prompt:
            err.write(prompt)
            err.flush()
        line = next(iterator, None)
        if line is None or line.strip() in ("/bye", "/exit"):
            return EXIT_OK
        if not line.strip():
            continue
        try:
            print_stream(conversation.ask(line.rstrip("\n")), out)
        except KeyboardInterrupt:
            err.write("[answer interrupted]\n")
            err.flush()
        except (StreamError, StreamTimeout, ServerBusy) as exc:
            print_error(exc)  # this answer failed; the conversation goes on


def _chat(args: argparse.Namespace) -> int:
    from ..conversation import Conversation
    text = read_prompt(args.prompt, sys.stdin)
    images = read_images(args.images)
    with open_client(args) as client:
        conversation = Conversation(client, args.model, system=args.system,
                                    options=options(args), format=args.format,
                                    think=args.think)
        if text is not None:
            print_stream(conversation.ask(text, images=images), sys.stdout)
            return EXIT_OK
        if images:  # the first message of the conversation carries them
            conversation = _FirstTurnImages(conversation, images)  # type: ignore[assignment]
        prompt = ">>> " if sys.stdin.isatty() else ""
        return chat_loop(conversation, sys.stdin, sys.stdout, sys.stderr, prompt=prompt)


class _FirstTurnImages:
    """A Conversation whose first ``ask`` sends ``images`` with the text."""

    def __init__(self, conversation: Conversation, images: List[str]) -> None:
        self._conversation = conversation
        self._images: Optional[List[str]] = images

    def ask(self, text: str) -> Stream:
        images, self._images = self._images, None
        return self._conversation.ask(text, images=images)


def _generate(args: argparse.Namespace) -> int:
    prompt = args.prompt
    if prompt is None and not sys.stdin.isatty():
        prompt = "-"  # piped: the whole input is the prompt
    text = read_prompt(prompt, sys.stdin)
    if text is None:
        raise ConfigError("give the prompt as an argument, or - (or a pipe) to read stdin")
    images = read_images(args.images)
    with open_client(args) as client:
        stream = client.generate(args.model, text, system=args.system, options=options(args),
                                 format=args.format, think=args.think, images=images)
        print_stream(stream, sys.stdout)
        return EXIT_OK


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "chat", help="chat with a model (no PROMPT: interactive)",
        description="Chat with a model. PROMPT - sends all of stdin as one message. Without "
                    "PROMPT, read one message a line from stdin, keeping the history (/bye "
                    "ends). With --dialect openai against llama.cpp give --max-tokens: "
                    "without it the answer runs to the full context.")
    parser.add_argument("prompt", nargs="?", default=None,
                        help="the message; - reads stdin (omit: interactive)")
    add_generation_arguments(parser)
    parser.set_defaults(func=_chat)

    parser = sub.add_parser(
        "generate", help="complete one prompt (/api/generate)",
        description="Complete one prompt. PROMPT - (or a pipe, PROMPT omitted) reads the "
                    "prompt from stdin. With --dialect openai against llama.cpp give "
                    "--max-tokens: its completions stop after 16 tokens otherwise.")
    parser.add_argument("prompt", nargs="?", default=None,
                        help="the prompt; - or omitted with a pipe reads stdin")
    add_generation_arguments(parser)
    parser.set_defaults(func=_generate)
