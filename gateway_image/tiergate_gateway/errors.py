"""OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``, which SDKs parse."""

from __future__ import annotations

import orjson

__all__ = ["GatewayError", "envelope", "sse_error_event"]


def envelope(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def sse_error_event(message: str, type_: str, code: str) -> bytes:
    """The envelope as a server-sent event, for a stream whose head went out already (the
    SDKs raise it as an APIError)."""
    return b"data: " + envelope(message, type_, code) + b"\n\n"


class GatewayError(Exception):
    """An error the gateway answers itself, with an HTTP status and OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return envelope(self.message, self.type, self.code, self.param)


def status_error_bytes(status: int, message: str) -> bytes:
    """A whole HTTP response for errors found while parsing (before any handler runs)."""
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    body = envelope(message, type_, None)
    return (
        b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )


__all__ += ["status_error_bytes"]
