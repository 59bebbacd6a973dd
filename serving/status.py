"""gRPC status errors and their text: the code an RPC answers with and a one-line, bounded message.

Every message a client or a log line sees passes through :func:`one_line`: TensorFlow's noise removed,
control characters escaped, length capped. Client-supplied names are quoted with :func:`echo`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import grpc

# TensorFlow's error text around the op's message: graph / function names and the (always unavailable,
# for a loaded SavedModel) node stack trace. None of it helps a client.
_TF_NOISE = re.compile(
    r"Graph execution error:"
    r"|Detected at node \S+ defined at \(most recent call last\):"
    r"|<stack traces unavailable>"
    r"|\{\{function_node [^}]*\}\}"
    r"|\[\[\{\{(?:function_)?node [^\]]*\]\]"
    r"|\[Op:[^\]]*\]"
)
# An error text (e.g. TensorFlow's) quoted inside a status message.
_MAX_MESSAGE_CHARS = 300
# A whole status message: well under gRPC's 8 KB metadata limit, and one readable log line.
_MAX_STATUS_CHARS = 1000


class ServingStatusError(Exception):
    """An error with the gRPC status code the RPC answers with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        # One printable line of bounded length, whatever a client put in the names it echoes: a status
        # over gRPC's metadata limit never reaches the client, and a newline would forge a log record.
        message = one_line(message, _MAX_STATUS_CHARS)
        super().__init__(message)
        self.code = code
        self.message = message


def echo(value: Any, limit: int = 64) -> str:
    """A client-supplied name as an error message or a log line quotes it: escaped, at most ``limit`` chars."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return "'" + (text if len(text) <= limit else text[: limit - 3] + "...") + "'"


def echo_names(names: Iterable[Any], most: int = 8) -> str:
    """Client-supplied names (e.g. input keys), each :func:`echo`'d, the first ``most`` of them."""
    names = list(names)
    shown = ", ".join(echo(n) for n in names[:most])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > most else ''}]"


def not_found(message: str) -> ServingStatusError:
    return ServingStatusError(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> ServingStatusError:
    return ServingStatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def exhausted(message: str) -> ServingStatusError:
    return ServingStatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def one_line(message: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """``message`` without TF's noise, control characters escaped, on one line, at most ``limit`` chars.

    Op errors quote the offending input (e.g. a whole serialized ``tf.Example``); unescaped, its bytes
    would split one log record into many lines and carry arbitrary bytes into the gRPC status.
    """
    text = _TF_NOISE.sub(" ", message).strip()
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    text = re.sub(r" {2,}", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
