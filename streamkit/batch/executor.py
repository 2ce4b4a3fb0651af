"""What runs a batch's requests: a Dispatcher, or an executor supplied from above.

``streamkit.ray`` supplies its Ray executor through ``run_batch(executor=...)``:
the batch package never imports Ray.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from ..config import HostSpec
from ..errors import ConfigError
from ..records import ResponseCache
from .config import BatchConfig

__all__ = ["ExecutorFactory", "open_executor"]

#: ``(config, hosts, cache) -> executor`` with the Dispatcher's map/cancel_all/close
ExecutorFactory = Callable[[BatchConfig, Optional[List[HostSpec]], Optional[ResponseCache]], Any]


def _host_slots(config: BatchConfig) -> Optional[List[HostSpec]]:
    """Hosts for the Dispatcher: a bare URL may take up to ``workers`` requests at once."""
    if config.hosts is None:
        return None
    return [(h, config.workers) if isinstance(h, str) else h for h in config.hosts]


def open_executor(config: BatchConfig, cache: Optional[ResponseCache], client: Any,
                  executor: Optional[ExecutorFactory]) -> Any:
    """What runs the requests: ``executor(config, hosts, cache)`` when given, else a
    Dispatcher over the config's hosts (or over ``client``).

    Raises:
        ConfigError: ``ray_address`` set without an executor.
    """
    from ..dispatch import Dispatcher
    hosts = _host_slots(config)
    if executor is not None:
        return executor(config, hosts, cache)
    if config.ray_address is not None:
        # batch sits below streamkit.ray (which imports it): the executor comes from above
        raise ConfigError("ray_address runs through streamkit.ray.run_batch (or "
                          "`streamkit batch --ray`), which supplies the Ray executor")
    if client is not None:
        return Dispatcher(client, hosts=hosts, workers=config.workers)
    return Dispatcher(hosts=hosts, workers=config.workers, dialect=config.dialect,
                      timeouts=config.timeouts, retry=config.retry, cache=cache,
                      api_key=config.api_key)
