"""Former home of the HTTP layer, now the ``_http`` package."""

# temporary: removed when the stream core moves to _http imports
from ._http import CancelToken, Response, Transport
from ._http import forget_frames as _forget_frames

__all__ = ["CancelToken", "Response", "Transport", "_forget_frames"]
