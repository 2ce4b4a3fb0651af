"""HTTP for the stream core: the only package that imports requests and urllib3.

Layers, each importing only those above it:

- ``cancel``      CancelToken: shuts an attempt's sockets down from any thread
- ``connection``  urllib3/http.client subclasses (every private-API use is here):
                  cancellable pools, head+body coalescing, arrival-stamping reader
- ``chunked``     the chunked transfer decoder (pure)
- ``translate``   requests/urllib3/socket errors -> streamkit errors, by phase
- ``lean``        the lean path: a plain-HTTP POST and its reply head, pooled sockets
- ``response``    Response: raw reads as they arrive, stamped, then back to the pool
- ``bounded``     whole non-streaming bodies: size cap, no inflating, one deadline
- ``poller``      Poller: one thread reading many sockets as they become readable
- ``transport``   Transport: a session per thread over one shared pool; open()
"""

from __future__ import annotations

from .bounded import INFO_BODY_LIMIT, read_bounded, refuse_encoding
from .cancel import CancelToken
from .poller import Poller, Watch
from .response import Response
from .translate import forget_frames
from .transport import Transport

__all__ = ["INFO_BODY_LIMIT", "CancelToken", "Poller", "Response", "Transport", "Watch",
           "forget_frames", "read_bounded", "refuse_encoding"]
