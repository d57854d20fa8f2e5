"""Wire constants and header helpers for ILP over HTTP and HTTP-OER-SYNC/ASYNC (spec
``04-http-transports.md``; open questions 18 and 19).

The body of every request and response is one OER ILP packet (see :mod:`.ilp`); this
module only pins the HTTP-level values ilp-plugin-http 1.6.1 uses, so transports and
tests share one source:

* request ``Content-Type: application/ilp+octet-stream`` (what we send; RFC 35 draft 1
  shows ``application/octet-stream``; "Receivers should accept both and not insist on
  either");
* response ``200`` with ``Content-Type: application/octet-stream`` for every ILP answer,
  Rejects included;
* ``401`` with body ``invalid authorization`` for bad credentials;
* ``Authorization: Bearer <token>`` or the raw token ("the server strips an optional
  ``Bearer`` prefix before checking. Accept both.").
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "AUTHORIZATION_HEADER",
    "BEARER_PREFIX",
    "CALLBACK_URL_HEADER",
    "HEALTH_CHECK_BODY",
    "HTTP_OER_ILP_PATH",
    "ILP_DESTINATION_HEADER",
    "ILP_OVER_HTTP_CONTENT_TYPE",
    "ILP_OVER_HTTP_RESPONSE_CONTENT_TYPE",
    "ILP_PEER_NAME_HEADER",
    "MAX_BODY_SIZE",
    "NO_HANDLER_BODY",
    "NO_HANDLER_STATUS",
    "OCTET_STREAM_CONTENT_TYPE",
    "REQUEST_ID_HEADER",
    "SERVER_CLOSED_BODY",
    "UNAUTHORIZED_BODY",
    "UNAUTHORIZED_CONTENT_TYPE",
    "UNAUTHORIZED_STATUS",
    "authorization_header",
    "bearer_token",
    "ilp_request_path",
    "strict_bearer_token",
]

#: What ilp-plugin-http sends and what we send (open question 19).
ILP_OVER_HTTP_CONTENT_TYPE: Final = "application/ilp+octet-stream"
#: RFC 35 draft 1's content type; also what Koa emits for a Buffer response body.
OCTET_STREAM_CONTENT_TYPE: Final = "application/octet-stream"
#: The Content-Type of a 200 answer carrying the OER Fulfill/Reject.
ILP_OVER_HTTP_RESPONSE_CONTENT_TYPE: Final = OCTET_STREAM_CONTENT_TYPE
#: Both forms are accepted on input (a receiver need not insist on either).
ACCEPTED_CONTENT_TYPES: Final = frozenset({ILP_OVER_HTTP_CONTENT_TYPE, OCTET_STREAM_CONTENT_TYPE})

AUTHORIZATION_HEADER: Final = "Authorization"
BEARER_PREFIX: Final = "Bearer "
#: "sender's name for itself" (ilp-plugin-http, optional).
ILP_PEER_NAME_HEADER: Final = "ILP-Peer-Name"
#: Advisory copy of the Prepare's destination; "the packet is authoritative".
ILP_DESTINATION_HEADER: Final = "ILP-Destination"

#: RFC 35 draft 3 (callback mode): where the Fulfill/Reject is to be POSTed.
CALLBACK_URL_HEADER: Final = "Callback-Url"
#: RFC 35 draft 3 (callback mode): the UUIDv4 pairing a Prepare with its callback.
REQUEST_ID_HEADER: Final = "Request-Id"

#: "401 bad credentials (ilp-plugin-http body "invalid authorization")".
UNAUTHORIZED_STATUS: Final = 401
UNAUTHORIZED_BODY: Final = b"invalid authorization"
UNAUTHORIZED_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
#: "502 "no handler registered" / "server is closed"".
NO_HANDLER_STATUS: Final = 502
NO_HANDLER_BODY: Final = b"no handler registered"
SERVER_CLOSED_BODY: Final = b"server is closed"
#: "413-style body limit at 32767 bytes".
MAX_BODY_SIZE: Final = 32767
#: "GET on the endpoint returns 200 OK with body OK (health check)".
HEALTH_CHECK_BODY: Final = b"OK"
#: HTTP-OER-SYNC/ASYNC: ``POST https://<peer>/ilp/<request-id>``.
HTTP_OER_ILP_PATH: Final = "/ilp/"


def bearer_token(authorization: str) -> str:
    """The token in an ``Authorization`` value, with an optional ``Bearer`` prefix
    (scheme matched case-insensitively) stripped; the raw legacy form passes through.
    """
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return authorization.strip()


def strict_bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None when the value
    does not use the ``Bearer`` scheme (a raw token included).

    RFC 7235: ``credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`` and
    "auth-scheme is case-insensitive"; so ``bearer x`` is accepted and ``x`` is not.
    For our own APIs (the connector's admin API); ILP-over-HTTP peers keep the lenient
    :func:`bearer_token` ("Accept both").
    """
    scheme, sep, rest = authorization.strip().partition(" ")
    if not sep or scheme.lower() != "bearer":
        return None
    token = rest.lstrip(" ")
    return token or None


def authorization_header(token: str, *, bearer: bool = True) -> str:
    """``Bearer <token>`` (new ilp-plugin-http option names) or the raw token (legacy)."""
    return BEARER_PREFIX + token if bearer else token


def ilp_request_path(request_id: str) -> str:
    """``/ilp/<request-id>`` for HTTP-OER-SYNC/ASYNC (request-id e.g. a UUID)."""
    return HTTP_OER_ILP_PATH + request_id
