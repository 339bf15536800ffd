"""Outbound HTTP to tenant-given URLs: connect only to addresses :mod:`routing.egress` allows, follow no redirect.

urllib resolves a host name and connects on its own; here the connection is made by :func:`_checked_socket`, which
resolves the name once, refuses if *any* address it resolves to is inside the fleet (a name with one public and one
loopback address is refused, not tried in turn), and connects to those same checked addresses, so nothing resolved
later (DNS rebinding) is used. TLS still verifies the certificate against the URL's host name. No proxy is taken from
the environment: a proxy would make the checked address the proxy's, not the endpoint's.
"""

from __future__ import annotations

import functools
import http.client
import logging
import socket
import urllib.request
from collections.abc import Iterable
from typing import Any

from routing.egress import Network, address_problem

log = logging.getLogger("yoloq.egress")


class EgressRefused(OSError):
    """The URL's host resolves to an address webhooks may not reach (its message says which and why)."""


def _checked_socket(
    allowed: tuple[Network, ...], address: tuple[str, int], timeout: Any = None, source_address: Any = None
) -> socket.socket:
    """``socket.create_connection`` that first checks every address the host resolves to."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        if problem := address_problem(str(sockaddr[0]), allowed):
            log.warning("refused a connection to %s: %s", host, problem)  # the address for the operator, not the tenant
            raise EgressRefused(f"{host} resolves to a non-public address: webhooks go to public addresses only (an "
                                "operator may allow a network with YOLOQ_WEBHOOK_ALLOW_PRIVATE)")  # fmt: skip
    error: OSError = OSError(f"{host} resolves to no address")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            sock.close()
            error = err
    raise error


def _checked(base: type[http.client.HTTPConnection], allowed: tuple[Network, ...]) -> Any:
    """A connection class of ``base`` whose sockets come from :func:`_checked_socket`."""

    class Checked(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = functools.partial(_checked_socket, allowed)

    return Checked


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is for a webhook (urllib then raises HTTPError with the 3xx)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Follow nothing: a signed body never goes where the subscriber did not say."""
        return None


class _Http(urllib.request.HTTPHandler):
    def __init__(self, allowed: tuple[Network, ...]) -> None:
        super().__init__()
        self.allowed = allowed

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_checked(http.client.HTTPConnection, self.allowed), req)


class _Https(urllib.request.HTTPSHandler):
    def __init__(self, allowed: tuple[Network, ...]) -> None:
        super().__init__()
        self.allowed = allowed

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_checked(http.client.HTTPSConnection, self.allowed), req, context=self._context)  # type: ignore[attr-defined]


def opener(allowed: Iterable[Network] = ()) -> urllib.request.OpenerDirector:
    """An opener for tenant-given URLs: checked addresses only, no redirects, no proxy from the environment."""
    nets = tuple(allowed)
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(), _Http(nets), _Https(nets))
