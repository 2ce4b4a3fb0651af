"""The models a server has, and the one message for a model it does not have.

Every command says a missing model the same way: once, with up to
MAX_SUGGESTIONS names the server has (closest first) and what to do. The
built-in emulator cannot pull a model, so for it the advice is to serve
more with ``streamkit emulate --model NAME`` rather than ``ollama pull``.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Collection, Iterable, List, Optional

from .errors import ModelNotFound, StreamkitError

if TYPE_CHECKING:
    from .client import Client

__all__ = ["MAX_SUGGESTIONS", "entry_names", "explain_missing", "missing_model_message",
           "missing_models", "model_names"]

MAX_SUGGESTIONS = 5  # models named when the one asked for is missing
_DEFAULT_REGISTRY = "registry.ollama.ai/library/"


def model_names(client: Client) -> Optional[List[str]]:
    """The names of the models ``client``'s server has; None when it cannot say
    (no list endpoint, unreachable, an odd reply). Never raises a StreamkitError:
    the list is a courtesy, and the caller keeps its original error."""
    try:
        return entry_names(client.models())
    except StreamkitError:
        return None


def entry_names(entries: Iterable[Any]) -> List[str]:
    """The names in a model list (``/api/tags`` entries or ``/v1/models`` data)."""
    return [str(m.get("name") or m.get("id") or m.get("model")) for m in entries
            if isinstance(m, dict)]


def missing_model_message(model: str, names: Optional[List[str]], builtin: bool,
                          original: str, choose: str = "pick one with -m") -> str:
    """One line for a missing model: the up to five closest names the server has
    (closest first), and what to do (``choose`` says where the name is given);
    ``original`` when the list is unknown."""
    if names is None:
        return original
    close = difflib.get_close_matches(model, names, n=MAX_SUGGESTIONS, cutoff=0.0)
    where = "the built-in emulator" if builtin else "the server"
    if not close:
        has = f"{where} has no models"
    else:
        more = len(names) - len(close)
        has = f"{where} has {', '.join(close)}" + (f" and {more} more" if more > 0 else "")
    todo = (f"{choose}, or serve more with `streamkit emulate --model NAME`"
            if builtin else f"{choose}, or run `ollama pull {model}`")
    return f"model {model!r} not found: {has}; {todo}"


def explain_missing(error: ModelNotFound, names: Optional[List[str]], builtin: bool,
                    choose: str = "pick one with -m") -> ModelNotFound:
    """``error`` again, its message from :func:`missing_model_message`."""
    return ModelNotFound(
        missing_model_message(error.model, names, builtin, str(error), choose),
        model=error.model, status_code=error.status_code, body=error.body)


def _canonical(name: str) -> str:
    """An Ollama model name as Ollama resolves it: case-insensitive, the default
    registry's prefix dropped, ``:latest`` when no tag is given."""
    name = name.strip().lower()
    if name.startswith(_DEFAULT_REGISTRY):
        name = name[len(_DEFAULT_REGISTRY):]
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def missing_models(wanted: Iterable[str], names: Collection[str]) -> List[str]:
    """The names in ``wanted`` (in order) that no name in ``names`` resolves to,
    by Ollama's rules (``llama3.2`` is ``llama3.2:latest``)."""
    have = {_canonical(n) for n in names}
    return [m for m in wanted if _canonical(m) not in have]
