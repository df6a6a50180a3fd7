"""Which page origins may connect to an app: its ``allowed_origins``.

An entry is ``*`` (any origin), an exact origin as browsers send it
(``https://app.example.com``, ``http://localhost:8080``) or a wildcard over the
subdomains of a host (``https://*.example.com``: ``a.example.com`` and
``a.b.example.com``, not ``example.com`` itself). Schemes and hosts compare
case-insensitively and a scheme's default port is the same as none, so
``HTTPS://App.Example.com:443`` is ``https://app.example.com``. An ``Origin``
that is not ``scheme://host[:port]`` (such as ``null``, sent by sandboxed pages and
``file:`` URLs) matches ``*`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConnectionRefused, ErrorCode

ANY = "*"
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z0-9_-]+|\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")
_WILDCARD = "*."
#: Characters of a refused ``Origin`` repeated in the refusal (it is the client's text).
_SHOWN = 100
#: The observers' reason for a connection refused for its origin.
REFUSAL_REASON = "origin"


def normalise(origin: str) -> str | None:
    """``origin`` as ``scheme://host[:port]`` in lower case without a default port, or None
    when it is not of that form (a path, credentials, ``null``...)."""
    scheme, separator, authority = origin.strip().lower().partition("://")
    if not separator or _SCHEME.fullmatch(scheme) is None:
        return None
    if authority.startswith("["):  # an IPv6 address: [::1]:8080
        host, bracket, after = authority.partition("]")
        host += bracket
        colon, port = after[:1], after[1:]
        if after and colon != ":":
            return None
    else:
        host, colon, port = authority.partition(":")
    if _HOST.fullmatch(host) is None or (colon and not port):
        return None
    if port:
        if _PORT.fullmatch(port) is None or int(port) > 65535:
            return None
        port = str(int(port))
        if port == _DEFAULT_PORTS.get(scheme):
            port = ""
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


@dataclass(frozen=True, slots=True)
class OriginRules:
    """An app's ``allowed_origins``, parsed once: a set lookup and a few suffix checks per
    connection."""

    any_origin: bool
    exact: frozenset[str]
    #: (``scheme://``, ``.host[:port]``) of each wildcard entry.
    wildcards: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> OriginRules:
        """The rules ``entries`` give; :class:`ValueError` naming the first malformed one."""
        if isinstance(entries, str):
            raise ValueError(f"allowed origins must be a list of origins, got {entries!r}")
        if ANY in entries:
            if len(entries) > 1:
                raise ValueError(f"{ANY!r} allows every origin: list it alone, "
                                 f"got {list(entries)!r}")
            return cls(True, frozenset(), ())
        exact, wildcards = set(), []
        for entry in entries:
            if not isinstance(entry, str):
                raise ValueError(f"{entry!r} is not a string")
            scheme, separator, rest = entry.partition("://")
            wild = separator and rest.startswith(_WILDCARD)
            # A wildcard is checked as the origin of one subdomain, then cut at the '*'.
            origin = normalise(f"{scheme}://x{rest[1:]}" if wild else entry)
            if origin is None:
                raise ValueError(f"{entry!r} is not an origin like https://app.example.com "
                                 "(scheme://host[:port], nothing after it) or a wildcard like "
                                 "https://*.example.com")
            if wild:
                prefix, _, suffix = origin.partition("://x")
                wildcards.append((prefix + "://", suffix))
            else:
                exact.add(origin)
        return cls(False, frozenset(exact), tuple(wildcards))

    def allows(self, origin: str) -> bool:
        """Whether a page of ``origin`` (an ``Origin`` header's value) may connect."""
        if self.any_origin:
            return True
        normal = normalise(origin)
        if normal is None:
            return False
        if normal in self.exact:
            return True
        return any(normal.startswith(prefix) and normal.endswith(suffix)
                   and len(normal) > len(prefix) + len(suffix)
                   for prefix, suffix in self.wildcards)


def origin_refusal(rules: OriginRules, allow_missing: bool,
                   origin: str | None) -> ConnectionRefused | None:
    """Why a connection with this ``Origin`` header (None: without one) may not open, as the
    4009 every transport refuses it with; None when it may."""
    if origin is None:
        if allow_missing:
            return None
        return ConnectionRefused(ErrorCode.UNAUTHORIZED,
                                 "Origin not allowed: this app needs an Origin header",
                                 REFUSAL_REASON)
    if rules.allows(origin):
        return None
    return ConnectionRefused(ErrorCode.UNAUTHORIZED, f"Origin not allowed: {origin[:_SHOWN]}",
                             REFUSAL_REASON)
