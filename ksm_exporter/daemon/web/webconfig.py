"""--web.config.file: the exporter-toolkit web configuration (TLS, basic auth, headers).

The same file node_exporter and the other Go exporters read, validated the same way:
unknown keys are errors, client_auth_type and min_version take the toolkit's names, relative
paths are relative to the file, and only the toolkit's security headers may be set.

Two runtime dependencies do the real work here: PyYAML parses the file (the toolkit's
format is YAML, anchors and all), and bcrypt verifies basic_auth_users' hashes (Python's
standard library has no bcrypt). Both are imported only when a file is given, so
an exporter without one does not pay their memory.

Differences from exporter-toolkit, each refused loudly rather than ignored, because a
setting silently ignored would let in someone the file meant to keep out:
- Python's ssl module verifies every client certificate it receives; it cannot accept an
  unverified one. RequestClientCert therefore behaves as VerifyClientCertIfGiven, and
  RequireAnyClientCert as RequireAndVerifyClientCert (against client_ca_file, or the
  system's CAs without one).
- cert/key/client_ca given inline, cipher_suites, curve_preferences, client_allowed_sans
  and rate_limit are not supported: the file is refused with a message saying so.
- http_server_config.http2 is accepted and ignored: this server speaks HTTP/1.1.
- An empty file is refused (the toolkit reads it as "no TLS, no auth"): most often it is
  a file cut short, and a reload must not turn TLS and auth off. `{}` says plain HTTP.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import Counter
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ksm_exporter.daemon.web import http1
from ksm_exporter.readers import read_regular_file

if TYPE_CHECKING:
    import ssl


class WebConfigError(ValueError):
    """The file cannot be used; the message says which key and why."""


# The toolkit's names for client_auth_type, mapped to what Python's ssl can do (see above).
CLIENT_AUTH_TYPES = {
    "": "none",
    "NoClientCert": "none",
    "RequestClientCert": "optional",
    "VerifyClientCertIfGiven": "optional",
    "RequireAnyClientCert": "required",
    "RequireClientCert": "required",  # the toolkit keeps this old name working
    "RequireAndVerifyClientCert": "required",
}

TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")

# exporter-toolkit allows only these response headers, some only with these values.
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
}
_UNSUPPORTED_TLS_KEYS = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences"}
_UNSUPPORTED_TLS_KEYS |= {"client_allowed_sans"}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
_UNSUPPORTED_TOP_KEYS = {"rate_limit"}
_HTTP_KEYS = {"http2", "headers"}

# $2a$/$2b$/$2y$, two-digit cost, 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")

# Successful checks remembered, as exporter-toolkit does: bcrypt costs 50-250 ms a check
# by design, which would otherwise be paid on every authenticated scrape.
AUTH_CACHE_SIZE = 128


@dataclass
class BasicAuth:
    """basic_auth_users: user -> bcrypt hash, with a cache of checks that succeeded."""

    users: dict[str, bytes]
    _ok: dict[bytes, None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _decoy: bytes = b""

    def __post_init__(self) -> None:
        # Unknown users are checked against this hash, at the cost most users' hashes have,
        # so that the time of a 401 does not tell which user names exist. Any well-formed
        # hash does: checkpw hashes with its salt and compares, whatever it was made from.
        # (The salt's 22nd character carries 2 bits only: "." is a valid one.)
        costs = Counter(int(h[4:6]) for h in self.users.values())
        cost = max(costs, key=lambda c: (costs[c], c)) if costs else 10
        self._decoy = f"$2b${cost:02d}${'D' * 21}.{'D' * 31}".encode()

    @staticmethod
    def parse_header(value: str | None) -> tuple[str, str] | None:
        """`Basic base64(user:password)` -> (user, password); None when absent or malformed."""
        if not value:
            return None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):  # binascii.Error; non-ASCII: ValueError
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    def _key(self, user: str, password: str) -> bytes:
        import hashlib  # loads OpenSSL's libcrypto: only when basic auth is configured

        hashed = self.users.get(user, b"")
        return hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()

    def cached(self, user: str, password: str) -> bool:
        """True when this exact user and password passed a check before (no bcrypt)."""
        if user not in self.users:
            return False
        with self._lock:
            return self._key(user, password) in self._ok

    def check(self, user: str, password: str) -> bool:
        """The slow bcrypt check (run it off the event loop). Never raises: a password
        bcrypt refuses (over 72 bytes) or any bcrypt error is a plain False, taking the
        same path and time for known and unknown users."""
        import bcrypt

        hashed = self.users.get(user)
        if hashed is not None and not _BCRYPT_HASH.match(hashed.decode("latin-1")):
            # bcrypt 4.0 to 4.1 panic (a BaseException) on some malformed hashes: such a
            # user is checked like an unknown one, same time, always False.
            hashed = None
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or self._decoy) and hashed is not None
        except Exception:  # ValueError: over 72 bytes, a hash bcrypt will not take, ...
            return False
        if ok:
            with self._lock:
                if len(self._ok) >= AUTH_CACHE_SIZE:
                    self._ok.pop(next(iter(self._ok)))
                self._ok[self._key(user, password)] = None
        return ok


@dataclass
class WebConfig:
    """What the server needs from the file. The default (no file) is plain HTTP, no auth."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: tuple[tuple[str, str], ...] = ()
    client_auth: str = "none"

    def describe(self) -> dict[str, object]:
        """For the log line at start and after each reload."""
        return {
            "tls": self.tls is not None,
            "client_auth": self.client_auth,
            "basic_auth_users": len(self.auth.users) if self.auth else 0,
            "headers": len(self.headers),
        }


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise WebConfigError(f"{where}: keys must be strings, got {k!r}")
    return value


def _check_keys(
    section: Mapping[str, Any], allowed: set[str], where: str, unsupported: Set[str] = frozenset()
) -> None:
    """`unsupported`: the toolkit's keys for this section that ksm-exporter refuses."""
    for key in section:
        if key in unsupported:
            raise WebConfigError(f"{where}: {key} is not supported by ksm-exporter")
        if key not in allowed:
            raise WebConfigError(f"{where}: unknown key {key!r}")


def _string(section: Mapping[str, Any], key: str, where: str) -> str:
    value = section.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WebConfigError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def _tls_version(section: Mapping[str, Any], key: str, default: str) -> str:
    value = _string(section, key, "tls_server_config") or default
    if value not in TLS_VERSIONS:
        raise WebConfigError(
            f"tls_server_config.{key}: unknown TLS version {value!r} "
            f"(one of {', '.join(TLS_VERSIONS)})"
        )
    return value


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base / p


def _tls_context(tls: Mapping[str, Any], base: Path) -> tuple[ssl.SSLContext | None, str]:
    where = "tls_server_config"
    cert = _string(tls, "cert_file", where)
    key = _string(tls, "key_file", where)
    ca = _string(tls, "client_ca_file", where)
    auth_type = _string(tls, "client_auth_type", where)
    min_v = _tls_version(tls, "min_version", "TLS12")
    max_v = _tls_version(tls, "max_version", "TLS13")
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{where}.prefer_server_cipher_suites: expected true or false")
    if auth_type not in CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{where}.client_auth_type: invalid ClientAuth: {auth_type}")
    if not (cert or key or ca or auth_type):
        return None, "none"  # as in the toolkit: no TLS settings, plain HTTP
    if not cert:
        raise WebConfigError(f"{where}: missing cert_file")
    if not key:
        raise WebConfigError(f"{where}: missing key_file")
    mode = CLIENT_AUTH_TYPES[auth_type]
    if ca and mode == "none":
        raise WebConfigError(
            f"{where}: client CA's have been configured without a Client Auth Policy"
        )
    if TLS_VERSIONS.index(min_v) > TLS_VERSIONS.index(max_v):
        raise WebConfigError(f"{where}: min_version {min_v} is above max_version {max_v}")

    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {
        "TLS10": ssl.TLSVersion.TLSv1,
        "TLS11": ssl.TLSVersion.TLSv1_1,
        "TLS12": ssl.TLSVersion.TLSv1_2,
        "TLS13": ssl.TLSVersion.TLSv1_3,
    }
    ctx.minimum_version = versions[min_v]
    ctx.maximum_version = versions[max_v]
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(_resolve(base, cert), _resolve(base, key))
    except (OSError, ssl.SSLError, ValueError) as e:  # ValueError: a NUL in the name
        raise WebConfigError(
            f"{where}: cannot load cert_file/key_file ({cert}, {key}): {e}"
        ) from None
    if mode != "none":
        ctx.verify_mode = ssl.CERT_REQUIRED if mode == "required" else ssl.CERT_OPTIONAL
        try:
            if ca:
                ctx.load_verify_locations(cafile=_resolve(base, ca))
            else:
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise WebConfigError(f"{where}: cannot load client_ca_file {ca}: {e}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx, mode


def _users(value: Any) -> BasicAuth | None:
    users = _mapping(value, "basic_auth_users")
    out: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            raise WebConfigError(f"basic_auth_users.{user}: not a bcrypt hash")
        cost = int(hashed[4:6])
        if not 4 <= cost <= 31:
            raise WebConfigError(f"basic_auth_users.{user}: bcrypt cost {cost} out of range")
        out[user] = hashed.encode()
    return BasicAuth(out) if out else None


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    headers = _mapping(value, "http_server_config.headers")
    out = []
    for name, v in headers.items():
        if not http1.is_token(name):
            raise WebConfigError(f"http_server_config.headers: {name!r} is not a header name")
        allowed = ALLOWED_HEADERS.get(name)
        if allowed is None:
            raise WebConfigError(f'HTTP header "{name}" can not be configured')
        if not isinstance(v, str) or not http1.is_field_value(v):
            # As Go's net/http refuses to send it; here it would fail every answer.
            raise WebConfigError(
                f"http_server_config.headers.{name}: {v!r} is not a valid header value "
                "(Latin-1 text without control characters)"
            )
        if allowed and v not in allowed:
            raise WebConfigError(
                f"invalid value for {name}. Expected one of: {list(allowed)}, but got: {v!r}"
            )
        out.append((name, v))
    return tuple(out)


def parse_web_config(text: str, base: Path) -> WebConfig:
    """Validate the YAML text; relative file names are taken from `base`."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    # Not only YAMLError: PyYAML raises ValueError for a date like 2001-13-45 and
    # RecursionError for [[[[... nested too deep; whatever the text, a clear refusal.
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise WebConfigError(f"not valid YAML: {' '.join(str(e).split())[:200]}") from None
    top = _mapping(doc, "top level")
    _check_keys(top, _TOP_KEYS, "top level", _UNSUPPORTED_TOP_KEYS)
    tls = _mapping(top.get("tls_server_config"), "tls_server_config")
    _check_keys(tls, _TLS_KEYS, "tls_server_config", _UNSUPPORTED_TLS_KEYS)
    http = _mapping(top.get("http_server_config"), "http_server_config")
    _check_keys(http, _HTTP_KEYS, "http_server_config")
    if not isinstance(http.get("http2", True), bool):
        raise WebConfigError("http_server_config.http2: expected true or false")
    headers = _headers(http.get("headers"))
    auth = _users(top.get("basic_auth_users"))
    ctx, mode = _tls_context(tls, base)
    return WebConfig(tls=ctx, auth=auth, headers=headers, client_auth=mode)


# A web config is a few hundred bytes (100 users: 8 KiB). A larger file is not one: it is
# refused unread, as parsing a megabyte of YAML would hold up the reload for seconds.
MAX_FILE_BYTES = 64 * 1024


def read_config_file(path: Path) -> str:
    """The file's text; WebConfigError says what is wrong. A FIFO, a device or a directory
    put in its place is refused at once rather than read (a FIFO would block the reload,
    and with it the shutdown)."""
    try:
        text = read_regular_file(path, MAX_FILE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WebConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        # Most often a file cut short by a failed write: never read as "no TLS, no auth".
        raise WebConfigError(f"{path}: empty file (write {{}} for plain HTTP without auth)")
    return text


def load_web_config(path: Path) -> WebConfig:
    """Read and validate --web.config.file; WebConfigError says what is wrong."""
    text = read_config_file(path)
    try:
        return parse_web_config(text, path.parent)
    except WebConfigError as e:
        raise WebConfigError(f"{path}: {e}") from None


# What a client must show, weakest first: a reload may only keep or raise it.
_CLIENT_AUTH_STRENGTH = ("none", "optional", "required")


def reload_web_config(current: WebConfig, path: Path) -> WebConfig:
    """The configuration SIGHUP applies to the running listener. A broken file, or one that
    would lower its protection (turn TLS off, drop basic auth entirely, stop asking for
    client certificates), raises WebConfigError and `current` stays: as in
    exporter-toolkit, a running listener is never downgraded; a restart applies the file."""
    new = load_web_config(path)
    lost = []
    if current.tls is not None and new.tls is None:
        lost.append("TLS off")
    if current.auth is not None and new.auth is None:
        lost.append("basic auth off")
    strength = _CLIENT_AUTH_STRENGTH.index
    if new.tls is not None and strength(new.client_auth) < strength(current.client_auth):
        lost.append(f"client certificates {current.client_auth} -> {new.client_auth}")
    if lost:
        raise WebConfigError(
            f"{path}: refused on reload, it would downgrade the running listener "
            f"({', '.join(lost)}); restart the exporter to apply it"
        )
    return new
