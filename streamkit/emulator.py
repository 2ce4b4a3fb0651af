"""An Ollama-faithful HTTP server for tests, demos and benchmarks.

It speaks Ollama's native API (``GET|HEAD /``, ``/api/version``,
``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/chat``, ``/api/generate``,
``/api/pull``, ``/api/embed``, ``/api/embeddings``) and its OpenAI-compatible
endpoints (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/models``) with the statuses, error strings, field order and framing of
the protocol reference. Text and vectors are deterministic (:func:`expected`
and :func:`expected_embedding` tell what a request will get). It imports only
the stdlib and streamkit's config/errors, so it starts fast.

Usage::

    with Emulator(tokens_per_second=50, parallel=2) as emu:
        emu.url                          # http://127.0.0.1:PORT
        emu.wait_until(lambda c: c["completed"] >= 1, timeout=5)
        emu.counters()                   # also GET /_emulator/counters

Behaviour:

- Pacing: the chunk with token ``i`` is due at ``start + first_token_delay +
  i / tokens_per_second`` (absolute schedule, no drift); ``tokens_per_second
  = 0`` streams unpaced, many chunks per socket write. A model's first use
  waits ``load_time`` (reported as ``load_duration``, counted in ``loads``).
- Concurrency: ``parallel`` slots per model, FIFO beyond them; when
  ``max_queue`` requests already wait, a new one gets 503 ``server busy,
  please try again.  maximum pending requests exceeded``.
- Connections: it listens with the system's backlog (``socket.SOMAXCONN``,
  capped by the kernel), as Ollama (Go's net/http) does, so hundreds of
  clients connecting at once all wait in the accept queue; with asyncio's
  default of 100 the kernel would drop the surplus handshakes, and those
  connections would complete only on a retransmission 1 s later.
- A client that leaves (EOF or reset) is noticed at once, also while
  queued, loading, in the first-token delay or in a stall: generation stops,
  the slot is released and ``disconnects`` counts it.
- Embeddings: the ``embed_models`` (default ``demo-embed``) embed and cannot
  generate (400 ``"demo-embed" does not support generate``); the other
  models generate, and an embed request for one loads it, then gets 501
  ``This server does not support embeddings. Start it with `--embeddings```
  (Ollama's runner text). Vectors have ``embed_dim`` components and unit
  length; the same model, text and seed always give the same vector.
  ``input`` is a string or a list; ``truncate`` (default true) keeps the
  first ``context - 2`` words of an input (``context`` is 4096, or
  ``options.num_ctx``); with ``truncate: false`` a longer input gets 400
  ``the input length exceeds the context length``. ``dimensions`` cuts and
  renormalises. ``/v1/embeddings`` honours ``encoding_format: base64``
  (little-endian float32). Like Ollama, an embedding model has one slot;
  a request holds it for ``embed_request_cost + tokens * embed_token_cost``
  seconds, where an input's tokens are its words plus 2.
- Counters: ``requests``, ``inference``, ``chunks_sent`` (body lines/events
  written), ``completed`` (responses that ran to their end), ``disconnects``,
  ``disconnects_waiting`` (the client left while queued or during a load),
  ``busy_rejections``, ``in_flight``, ``peak_in_flight`` (the most
  generating at once since the start or the last reset), ``waiting``,
  ``loads``, ``embed_inputs`` (inputs embedded), ``faults`` (kind → count),
  ``by_path``. ``POST /_emulator/reset`` zeroes them.

Fault specs (``EmulatorConfig(faults=...)``, :meth:`Emulator.set_faults`,
``streamkit emulate --fault SPEC``)::

    SPEC   := FAULT (";" FAULT)*
    FAULT  := KIND[":" ARG] ("," KEY "=" VALUE)*

Kinds (mid-body kinds default to ``after=1``, counted in chunks sent):

- ``refuse``: close the connection before any response byte.
- ``reset``: reset it (RST, SO_LINGER 0) before any response byte.
- ``status:CODE``: answer CODE with the endpoint's error body (503 uses the
  server-busy text); options ``retry_after=SECONDS``,
  ``retry_after_date=SECONDS`` (an HTTP date that far ahead), ``message=TEXT``.
- ``cut,after=K``: close mid-body after K chunks, without the chunked terminator.
- ``stall,after=K``: stop sending after K chunks; hold the connection until
  the client leaves (counted as a disconnect).
- ``error,after=K``: after K chunks an in-band ``{"error": ...}`` line, then a
  clean end with no done chunk (``after=0``: a 200 whose only line is the
  error, like servers before 0.12.6); option ``message=TEXT``. On /v1 an
  empty-content chunk and a clean end without finish chunk or ``[DONE]``.
- ``malformed,after=K``: one line that is not JSON after K chunks, then go on.
- ``blank``: a blank line after every chunk.
- ``nodone``: end the body cleanly without the done chunk (/v1: without ``[DONE]``).
- ``slow_headers,delay=SECONDS``: wait (default 1 s) before the status line.

With ``stream: false``, and on the embedding endpoints, a ``cut`` closes
without a reply, ``stall`` holds the connection, ``error`` answers 500; the
other mid-body kinds change nothing.

Triggers (all given must hold; none means every request): ``p=PROB``,
``first=N`` (the first N matching requests), ``nth=N`` (only the Nth),
``every=N``; ``model=NAME`` restricts a spec to one model. Only inference
requests match; each spec counts the requests that match its model; the
first spec that triggers wins (one fault per request). Example::

    status:503,retry_after=2,first=2; cut,after=5,p=0.1; slow_headers,delay=3,model=demo
"""

from __future__ import annotations

from ._emulator.embed import expected_embedding
from ._emulator.faults import Fault, parse_faults
from ._emulator.server import Emulator
from ._emulator.settings import EmulatorConfig
from ._emulator.text import Expected, expected

__all__ = ["Emulator", "EmulatorConfig", "Expected", "Fault", "expected", "expected_embedding",
           "parse_faults"]
