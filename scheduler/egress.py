"""Where fires may go: the egress policy every action's request goes through, as pure decisions.

A schedule is a way to make the workers' identity call something, so the targets are limited
by `SCION_SCHEDULER_ALLOWED_TARGETS`: a list (commas or spaces) of

* URL prefixes, e.g. `https://hub.example.com/` (scheme, host and port equal, the path starts
  with the prefix's path at a `/` boundary);
* host patterns, e.g. `hub.internal` (exactly that host, any scheme and port), `*.run.app`
  (any subdomain), `*` (any host);
* networks, e.g. `10.8.0.0/16` (a URL whose host is an address in it).

Empty means any *public* host. Whatever the list says, addresses are refused by kind:

* link-local and metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, and the
  metadata host names) unless the address or metadata host name itself is an entry's host;
* loopback, private and other non-public addresses (127/8, ::1, 0.0.0.0, 10/8, 172.16/12,
  192.168/16, 100.64/10, fc00::/7, ...) unless named: the address as an entry's host or in an
  entry's network, or the URL's host as an entry's exact (not wildcard) host.

IPv4-mapped and NAT64 IPv6 addresses count as the IPv4 address inside. The same rules are
applied twice: `check_url` on a URL's text (validation, and the worker before it sends), and
`check_address` on every address its host resolves to when the worker connects (see
`worker.egress_sender`), so a name that resolves (or is rebound) to a refused address is
refused too. `header_problem` lists the request headers a schedule may not set.

This module only decides; it never resolves names or opens connections.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "SCION_SCHEDULER_ALLOWED_TARGETS"
METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata", "metadata.goog", "instance-data",
    "instance-data.ec2.internal",
})
_METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK_NAMES = ("localhost",)
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_PATTERN = re.compile(rf"\*|(\*\.)?{_LABEL}(\.{_LABEL})*")

# A schedule may not set these: `Host` would send the request to another virtual host than the
# one the policy checked, the metadata headers are what metadata servers require of a caller
# (the hub's own metadata sidecar too: pkg/sciontool/metadata/server.go:258 of the Scion repo),
# and hop-by-hop headers belong to the connection, not to the request (RFC 9110 7.6.1).
METADATA_HEADERS = frozenset({"metadata-flavor", "x-google-metadata-request", "metadata"})
FORBIDDEN_HEADERS = METADATA_HEADERS | {
    "host", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
}
# ...and, when the action sends an OIDC ID token, the header that carries it.
OIDC_HEADERS = frozenset({"authorization"})


class AddressKind(StrEnum):
    """What an address is, for the policy."""

    PUBLIC = "public"
    PRIVATE = "private or loopback"
    METADATA = "link-local or metadata"


def classify(address: IPAddress) -> AddressKind:
    """The kind of one address; IPv4-mapped and NAT64 addresses as the IPv4 address inside."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return classify(address.ipv4_mapped)
        if address in _NAT64:
            return classify(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if any(address in network for network in _METADATA_NETWORKS):
        return AddressKind.METADATA
    if address.is_global and not address.is_multicast:
        return AddressKind.PUBLIC
    return AddressKind.PRIVATE


def normalize_host(host: str) -> str:
    """Hosts compare lowercased, without a trailing dot or IPv6 brackets, an address in its
    canonical form (`0:0::1` is `::1`)."""
    host = host.strip("[]").lower().rstrip(".")
    address = _ip(host)
    return host if address is None else str(address)


def _ip(host: str) -> IPAddress | None:
    """The address `host` is, also in the legacy IPv4 forms resolvers accept (`127.1`,
    `2130706433`, `0x7f.0.0.1`), which would otherwise pass as names."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _LEGACY_IPV4.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@dataclass(frozen=True)
class Target:
    """One entry of the list. Exactly one of `host` (a URL prefix or host pattern) and
    `network` is set; `scheme`, `port` and `path` only for a URL prefix."""

    text: str
    host: str | None = None
    network: IPNetwork | None = None
    scheme: str | None = None
    port: int | None = None
    path: str = "/"

    def names(self, host: str) -> bool:
        """Whether this entry names `host` (normalized) exactly."""
        return self.host == host

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        """Whether a URL (its normalized parts) falls under this entry."""
        if self.network is not None:
            address = _ip(host)
            return address is not None and address in self.network
        assert self.host is not None
        if self.host == "*":
            host_ok = True
        elif self.host.startswith("*."):
            host_ok = host.endswith(self.host[1:])
        else:
            host_ok = host == self.host
        if not host_ok or self.scheme is None:
            return host_ok
        prefix = self.path
        path_ok = path == prefix.rstrip("/") or path.startswith(
            prefix if prefix.endswith("/") else prefix + "/")
        return self.scheme == scheme and self.port == port and path_ok


def parse_target(text: str) -> Target:
    """One entry; `ValueError` saying what is wrong with it."""
    if "://" in text:
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{text!r}: a URL prefix must be an absolute http(s) URL")
        if parts.query or parts.fragment or parts.username is not None:
            raise ValueError(f"{text!r}: a URL prefix has no user, query or fragment")
        host = normalize_host(parts.hostname)
        if _ip(host) is None and not _HOST_PATTERN.fullmatch(host):
            raise ValueError(f"{text!r}: not a host name or pattern: {host!r}")
        return Target(text, host=host, scheme=parts.scheme,
                      port=port or _DEFAULT_PORTS[parts.scheme], path=parts.path or "/")
    if "/" in text:
        try:
            return Target(text, network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r}: not a network such as 10.8.0.0/16") from None
    host = normalize_host(text)
    if _ip(host) is None and not _HOST_PATTERN.fullmatch(host):
        raise ValueError(f"{text!r}: not a URL prefix, host, host pattern (*.example.com) or "
                         "network")
    return Target(text, host=host)


@dataclass(frozen=True)
class EgressPolicy:
    """The allowed targets; no entries means any public host."""

    targets: tuple[Target, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> EgressPolicy:
        """A policy from the setting's text; `ValueError` naming the first bad entry."""
        return cls(tuple(parse_target(t) for t in re.split(r"[,\s]+", text or "") if t))

    def check_url(self, url: str) -> str | None:
        """Why `url` may not be called, or None when it may (as far as its text tells)."""
        return _checked_url(self, url)

    def _url_problem(self, url: str) -> str | None:
        try:
            parts = urlsplit(url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        except ValueError as exc:
            return f"is not a valid URL: {exc}"
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            return "is not an absolute http(s) URL"
        if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
            return "has a `.` or `..` path segment (it could step outside an allowed prefix)"
        host = normalize_host(parts.hostname)
        address = _ip(host)
        matching = [t for t in self.targets
                    if t.matches(parts.scheme, host, port, parts.path or "/")]
        if self.targets and not matching:
            return f"is not in {SETTING}"
        if address is not None:
            return self._address_problem(host, address, matching)
        if host in METADATA_HOSTS and not any(t.names(host) for t in matching):
            return (f"calls the metadata server ({host}), which {SETTING} does not name "
                    "exactly")
        if (host in _LOOPBACK_NAMES or host.endswith(".localhost")) and not any(
                t.names(host) for t in matching):
            return f"calls a loopback address ({host}), which {SETTING} does not name"
        return None

    def check_address(self, host: str, address: str) -> str | None:
        """Why a connection to `address`, which `host` (as the URL names it) resolved to, is
        refused, or None when it is allowed."""
        ip = _ip(address.split("%", 1)[0])  # an IPv6 scope ID is not part of the address
        if ip is None:
            return f"{address!r} is not an IP address"
        host, kind = normalize_host(host), classify(ip)
        # A host the operator named exactly is trusted with what it resolves to; for a
        # metadata address, only when the name is a metadata server's own.
        if kind is not AddressKind.PUBLIC and any(t.names(host) for t in self.targets) and (
                kind is AddressKind.PRIVATE or host in METADATA_HOSTS):
            return None
        problem = self._address_problem(str(ip), ip, list(self.targets))
        return None if problem is None else f"{host} resolves to {problem.removeprefix('calls ')}"

    def _address_problem(self, host: str, address: IPAddress,
                         candidates: list[Target]) -> str | None:
        kind = classify(address)
        if kind is AddressKind.PUBLIC:
            return None
        if any(t.names(host) for t in candidates):
            return None
        if kind is AddressKind.METADATA:
            return f"calls a {kind} address ({host}), which {SETTING} does not name exactly"
        if any(t.network is not None and address in t.network for t in candidates):
            return None
        return f"calls a {kind} address ({host}), which {SETTING} does not name"


@lru_cache(maxsize=4096)
def _checked_url(policy: EgressPolicy, url: str) -> str | None:
    # A pure function of the policy and the text, cached: a tick checks the URL of every
    # document it reads, and the worker every request's twice (the http action, then the
    # egress transport), mostly the same few URLs; a check costs eight times a look-up.
    return policy._url_problem(url)


def header_problem(name: str, *, oidc: bool) -> str | None:
    """Why a schedule may not set the request header `name`, or None when it may. `oidc`: the
    action sends an OIDC ID token, in `Authorization`."""
    lowered = name.strip().lower()
    if lowered in FORBIDDEN_HEADERS:
        return (f"{name!r} may not be set by a schedule (Host, metadata and hop-by-hop headers "
                "are refused)")
    if oidc and lowered in OIDC_HEADERS:
        return (f"{name!r} may not be set when the action has an oidc_audience (it carries the "
                "token)")
    return None
