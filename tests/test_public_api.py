"""The public surface is what ``__all__`` says, sorted, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import streamkit
from streamkit import errors


def test_all_is_sorted_and_unique() -> None:
    assert list(streamkit.__all__) == sorted(set(streamkit.__all__))


def test_every_exported_name_resolves() -> None:
    for name in streamkit.__all__:
        assert getattr(streamkit, name) is not None, name


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        streamkit.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_is_lazy() -> None:
    # `import streamkit` must not pull in requests (the emulator and CLI
    # startup depend on it staying cheap).
    code = "import sys, streamkit; print('requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "False"


def test_error_tree_matches_design() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.StreamTimeout, TimeoutError)
    assert issubclass(errors.ModelNotFound, errors.ResponseError)
    assert issubclass(errors.ServerBusy, errors.ResponseError)
    assert issubclass(errors.StreamDiverged, errors.StreamInterrupted)
    for cls in (errors.StreamInterrupted, errors.ServerStreamError, errors.ProtocolError):
        assert issubclass(cls, errors.StreamError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.StreamkitError)
        assert getattr(streamkit, name) is getattr(errors, name)


def test_error_messages_carry_context() -> None:
    err = errors.ConfigError("missing prompt", path="p.jsonl", line=7)
    assert str(err) == "p.jsonl:7: missing prompt" and err.line == 7
    diverged = errors.StreamDiverged("differs", delivered="ab", replayed="ax")
    assert diverged.partial == "ab" and diverged.replayed == "ax"
    busy = errors.ServerBusy("busy", status_code=503, retry_after=1.5)
    assert busy.retry_after == 1.5 and busy.status_code == 503
