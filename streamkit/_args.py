"""Argument checks shared by the Client and the Conversation (ConfigError names the argument).

Nothing here does I/O; each check returns the value it accepted (or None).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

from .config import Secret, api_key_from_env
from .errors import ConfigError

__all__ = ["check_api_key", "check_common", "check_headers", "check_images", "check_messages",
           "check_model", "check_optional"]


def check_model(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model must be a non-empty string, got {model!r}")
    return model


def check_messages(messages: object) -> List[Dict[str, Any]]:
    if not isinstance(messages, (list, tuple)):
        raise ConfigError(f"messages must be a list of {{'role', 'content'}} dicts, "
                          f"got {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ConfigError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        if not isinstance(message.get("role"), str) or not message["role"]:
            raise ConfigError(f"messages[{i}] needs a 'role' string (system, user, "
                              f"assistant or tool)")
        if not isinstance(message.get("content"), str):
            raise ConfigError(f"messages[{i}] needs a 'content' string")
        check_images(f"messages[{i}]['images']", message.get("images"))
        checked.append(dict(message))
    return checked


def check_images(name: str, images: object) -> None:
    if images is not None and not (isinstance(images, (list, tuple)) and all(
            isinstance(i, str) for i in images)):
        raise ConfigError(f"{name} must be a list of base64 strings (the image files' bytes)")


def check_optional(name: str, value: object, types: Any, what: str) -> None:
    if value is None:
        return
    # bool is an int: keep_alive=True must not pass as "1 second".
    sneaky_bool = isinstance(value, bool) and bool not in _as_tuple(types)
    if sneaky_bool or not isinstance(value, types):
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def _as_tuple(types: Any) -> tuple[Any, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_common(options: object, format: object, think: object, keep_alive: object,
                  id: object) -> None:
    check_optional("options", options, Mapping, "a dict of Ollama option names")
    check_optional("format", format, (str, Mapping), "'json' or a JSON-Schema dict")
    check_optional("think", think, (bool, str), "a bool or 'low'/'medium'/'high'")
    check_optional("keep_alive", keep_alive, (str, int, float),
                    "a duration string like '5m' or seconds")
    check_optional("id", id, str, "a string")


def check_headers(headers: Optional[Mapping[str, str]]) -> Dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError("headers must be a dict of str to str")
    return dict(headers)


def check_api_key(api_key: Union[str, Secret, None], dialect: str) -> Optional[Secret]:
    if api_key is None:
        return api_key_from_env(dialect=dialect)
    if isinstance(api_key, Secret):
        return api_key if api_key.reveal() else None
    if not isinstance(api_key, str):
        raise ConfigError("api_key must be a string")  # never echo the value
    return Secret(api_key) if api_key else None
