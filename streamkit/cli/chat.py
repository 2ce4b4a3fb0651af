"""``streamkit chat`` and ``streamkit generate``: print a model's answer as it streams."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, TextIO

from ..batch.config import parse_option
from ..errors import ServerBusy, StreamError, StreamTimeout
from .common import EXIT_OK, add_host_argument, argtype, open_client, print_error

if TYPE_CHECKING:
    from ..client import Conversation
    from ..stream import Stream


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="model name, e.g. llama3.2")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("-o", "--option", action="append", type=argtype(parse_option),
                        default=[], metavar="KEY=VALUE",
                        help="an Ollama option, e.g. -o temperature=0 -o num_predict=64")
    add_host_argument(parser)


def options(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    return dict(args.option) if args.option else None


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
    from ..client import Conversation
    with open_client(args) as client:
        conversation = Conversation(client, args.model, system=args.system,
                                    options=options(args))
        if args.prompt is not None:
            print_stream(conversation.ask(args.prompt), sys.stdout)
            return EXIT_OK
        prompt = ">>> " if sys.stdin.isatty() else ""
        return chat_loop(conversation, sys.stdin, sys.stdout, sys.stderr, prompt=prompt)


def _generate(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        stream = client.generate(args.model, args.prompt, system=args.system,
                                 options=options(args))
        print_stream(stream, sys.stdout)
        return EXIT_OK


def register(sub: Any) -> None:
    parser = sub.add_parser("chat", help="chat with a model (no PROMPT: interactive)",
                            description="Chat with a model. Without PROMPT, read one message "
                                        "a line from stdin, keeping the history.")
    parser.add_argument("prompt", nargs="?", default=None, help="the message (omit: interactive)")
    add_generation_arguments(parser)
    parser.set_defaults(func=_chat)

    parser = sub.add_parser("generate", help="complete one prompt (/api/generate)")
    parser.add_argument("prompt", help="the prompt")
    add_generation_arguments(parser)
    parser.set_defaults(func=_generate)
