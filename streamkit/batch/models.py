"""The models a batch asks for: checked before the first request, named in errors.

:meth:`ModelCheck.check` runs after the prompt file is validated and before the
output is opened, when the models the lines ask for can be compared with
what the hosts list: if the run's model (``-m``) is missing, or every model
the lines ask for is, the run stops there with the message every command
gives (see :mod:`streamkit._models`) instead of failing each line. A line's
own model that is missing beside ones that are there is data, like a bad
answer: its lines fail, and the message is said once. Only the Ollama
dialect is checked: an OpenAI-compatible server may answer any name
(llama.cpp serves its one model whatever is asked), so its list proves
nothing.

Whenever a line fails on a missing model (the check passed it or could not be
made), :meth:`ModelCheck.explain` gives its error the same message, with the
names listed once per host.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Union

from .._models import entry_names, explain_missing, missing_models
from ..config import HostSpec, Timeouts
from ..errors import ModelNotFound
from .config import BatchConfig

__all__ = ["LIST_TIMEOUT_S", "ModelCheck"]

LIST_TIMEOUT_S = 10.0  # asking a host for its models (the check, the cache's digests)


def _host_urls(hosts: Optional[Iterable[HostSpec]]) -> List[Optional[str]]:
    if not hosts:
        return [None]  # the default host ($OLLAMA_HOST)
    return [h if isinstance(h, str) else h[0] for h in hosts]


class ModelCheck:
    """The models of one run: :meth:`check` before the first request, :meth:`explain`
    for each line failing on a missing model. The names a host lists are asked
    for once and kept for the run.

    ``builtin``: the hosts are the command line's built-in emulator (the message
    says how to serve more, not ``ollama pull``). ``report`` hears each missing
    model once. Used by one thread at a time.
    """

    def __init__(self, config: BatchConfig, client: Any, *, builtin: bool = False,
                 report: Optional[Callable[[str], None]] = None) -> None:
        self._config = config
        self._client = client
        self._builtin = builtin
        self._report = report
        self._listed: Dict[Optional[str], Union[List[Dict[str, Any]], Exception]] = {}
        self._said: Set[str] = set()

    def listed(self, host: Optional[str]) -> List[Dict[str, Any]]:
        """The entries of ``host``'s model list (None: the default host, or the
        run's client), asked once a run; blocks up to LIST_TIMEOUT_S the first time.

        Raises:
            StreamkitError: the host cannot list its models (raised again on
                every later call); any error of an odd reply likewise.
        """
        key = None if self._client is not None and host == self._client.host else host
        if key not in self._listed:
            try:
                self._listed[key] = [e for e in self._ask(key) if isinstance(e, dict)]
            except Exception as exc:  # the list is a courtesy: the run goes on without it
                self._listed[key] = exc
        found = self._listed[key]
        if isinstance(found, Exception):
            raise found
        return found

    def _ask(self, host: Optional[str]) -> List[Dict[str, Any]]:
        if host is None and self._client is not None:
            return self._client.models()  # type: ignore[no-any-return]
        from ..client import Client
        bounded = Timeouts(connect=LIST_TIMEOUT_S, first_token=LIST_TIMEOUT_S,
                           total=LIST_TIMEOUT_S)
        with Client(host, dialect=self._config.dialect, timeouts=bounded,
                    api_key=self._config.api_key) as lister:
            return lister.models()

    def _names_on(self, host: Optional[str]) -> Optional[List[str]]:
        """The names ``host`` lists; None when it cannot say."""
        try:
            return entry_names(self.listed(host))
        except Exception:  # see listed()
            return None

    def _choose(self, model: str, line: Optional[int] = None) -> str:
        """Where to give another name: -m gives the run's model; a line's own
        ``model`` is fixed in the file."""
        if model == self._config.model:
            return "pick one with -m"
        return 'name one in the "model" field' + (
            f" (first asked for on line {line})" if line is not None else "")

    def check(self, wanted: Optional[Mapping[str, int]]) -> None:
        """Stop before the first request if the run's model (``config.model``) is
        on none of the hosts, or if none of the models in ``wanted`` (model → the
        first line asking for it) is. A line's own model that is missing, beside
        ones that are there, fails its lines instead.

        ``wanted`` None (too many to check), the OpenAI dialect, or no host
        listing a model: nothing is checked. Blocks for one model-list request
        per host.

        Raises:
            ModelNotFound: the first missing model, said as every command says
                it, naming any other missing ones.
        """
        config = self._config
        if not wanted or config.dialect != "ollama":
            return
        names: List[str] = []
        for host in _host_urls(config.hosts):
            names.extend(self._names_on(host) or ())
        if not names:  # no list (or an empty one) proves nothing: let the requests say
            return
        names = list(dict.fromkeys(names))
        missing = missing_models(wanted, names)
        if config.model in missing:
            missing.insert(0, missing.pop(missing.index(config.model)))  # said first
        elif len(missing) < len(wanted):
            return
        model = missing[0]
        error = explain_missing(ModelNotFound(f"model {model!r} not found", model=model),
                                names, self._builtin, self._choose(model, wanted[model]))
        if len(missing) > 1:
            others = ", ".join(repr(m) for m in missing[1:])
            error = ModelNotFound(f"{error} (also not found: {others})", model=model)
        raise error

    def explain(self, error: BaseException, host: Optional[str]) -> BaseException:
        """``error`` with the helpful message if it is a ModelNotFound, else itself."""
        if not isinstance(error, ModelNotFound):
            return error
        explained = explain_missing(error, self._names_on(host), self._builtin,
                                    self._choose(error.model))
        if self._report is not None and error.model not in self._said:
            self._said.add(error.model)
            self._report(f"{explained} (its prompts fail: see {self._config.errors})")
        return explained
