"""The appliance's configuration: one frozen, typed tree loaded from TOML.

``load(path, environ)`` reads the file, resolves ``${VAR}`` references in
every string (see :mod:`appliance.interpolate`) and secret references (see
:mod:`appliance.secrets`), checks every key against the schema below and
collects *all* problems before raising one :class:`ConfigError`, so an
operator fixes a file in one pass. Relative paths are relative to the config
file's directory. The key reference is ``docs/config.md``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from appliance.interpolate import InterpolationError, interpolate
from appliance.secrets import Secret, SecretError, resolve_secret

#: Signing key used when a development instance names none. Production
#: refuses to start with it (see :mod:`appliance.preflight`).
DEV_JWT_SIGNING_KEY = b"telemancer-development-jwt-signing-key-not-secret"
DEV_JWT_REFERENCE = "builtin:development-default"

Mode = Literal["development", "production"]
LogFormat = Literal["auto", "json", "text"]
LogLevel = Literal["debug", "info", "warn", "error"]
MODES: tuple[Mode, ...] = ("development", "production")
#: Digest algorithms, in the order challenges offer them (RFC 8760: strongest first).
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warn", "error")


class ConfigError(Exception):
    """Every problem found in a config, each with its key path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{key}: {message}" for key, message in problems))


@dataclass(frozen=True)
class ListenAddress:
    """A ``host:port`` to listen on; IPv6 hosts are written in brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class AdminConfig:
    """The HTTPS admin listener (console, API, ``/healthz``)."""

    listen: ListenAddress


@dataclass(frozen=True)
class TLSConfig:
    """The server certificate shared by the admin and SIP listeners."""

    certificate: Path
    private_key: Secret
    chain: Path | None


@dataclass(frozen=True)
class SecretsConfig:
    """Keys the service signs with."""

    jwt_signing_key: Secret
    audit_signing_key: Secret


@dataclass(frozen=True)
class AuditConfig:
    """When signed checkpoints of the audit chain are written."""

    checkpoint_every: int
    checkpoint_interval_seconds: int


@dataclass(frozen=True)
class LogConfig:
    """Log output: ``auto`` is JSON lines unless stdout is a terminal."""

    format: LogFormat
    level: LogLevel


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SipConfig:
    """SIP listeners, the registrar's limits and the brute-force rule."""

    tls_listen: ListenAddress
    plaintext_enabled: bool
    plaintext_listen: ListenAddress
    internal_subnets: tuple[IPNetwork, ...]
    failed_register_limit: int
    failed_register_block_seconds: int
    block_allowlist: tuple[IPNetwork, ...]
    min_expires: int
    max_expires: int
    max_contacts: int
    max_connections_per_ip: int
    idle_timeout_seconds: int
    nonce_lifetime_seconds: int
    digest_algorithms: tuple[str, ...]
    advertised_host: str
    max_call_seconds: int
    #: Resolvers for carriers named by host name; empty: the machine's /etc/resolv.conf.
    dns_servers: tuple[ListenAddress, ...] = ()

    def advertised(self, listen: ListenAddress, fallback: str) -> str:
        """The host phones reach a listener at (Via, Record-Route): the configured
        advertised host, else the listener's own address, else (for a wildcard
        listener) ``fallback``, the machine's host name."""
        if self.advertised_host:
            return self.advertised_host
        return fallback if listen.host in _WILDCARDS else listen.host


#: The relay's default port range (RTP on even ports, RTCP on the odd port above).
MEDIA_PORT_MIN, MEDIA_PORT_MAX = 20000, 29999
#: A call has two legs, each an RTP/RTCP pair: a range with fewer pairs carries no call.
MEDIA_MIN_PAIRS = 2


@dataclass(frozen=True)
class MediaConfig:
    """The RTP/SRTP relay: the address its sockets bind (``listen``), the one
    written in SDP ``c=`` lines for phones and carriers to send to
    (``advertised_address``), its port range and the silence that ends a call."""

    listen: str
    advertised_address: str
    port_min: int
    port_max: int
    idle_timeout: int

    @property
    def port_pairs(self) -> int:
        """How many RTP/RTCP pairs (an even port and the odd one above) the range holds."""
        return media_port_pairs(self.port_min, self.port_max)


def media_port_pairs(port_min: int, port_max: int) -> int:
    """The even ports ``p`` with ``port_min <= p`` and ``p + 1 <= port_max``."""
    return len(range(port_min + port_min % 2, port_max, 2))


@dataclass(frozen=True)
class Config:
    """The whole configuration tree."""

    path: Path
    mode: Mode
    data_dir: Path
    allow_unencrypted_storage: bool
    admin: AdminConfig
    tls: TLSConfig
    secrets: SecretsConfig
    audit: AuditConfig
    log: LogConfig
    sip: SipConfig
    media: MediaConfig

    @property
    def production(self) -> bool:
        """True when the production refusals apply."""
        return self.mode == "production"

    @property
    def database_path(self) -> Path:
        """The SQLite database, always inside ``data_dir``."""
        return self.data_dir / "telemancer.sqlite3"


def load(path: Path, environ: Mapping[str, str]) -> Config:
    """Load and validate ``path``; raise :class:`ConfigError` listing every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([(str(path), "config file not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([(str(path), f"cannot read config file: {e}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([(str(path), f"invalid TOML: {e}")]) from None
    problems: list[tuple[str, str]] = []
    raw = _interpolate_tree(raw, "", environ, problems)
    reader = _Reader(raw, "", problems)
    config = _build(reader, path.resolve(), environ)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _build(r: _Reader, path: Path, environ: Mapping[str, str]) -> Config | None:
    base = path.parent
    mode = r.choice("mode", MODES, "production")
    production = mode == "production"
    data_dir = r.path("data_dir", base, default="/var/lib/telemancer", must_exist=True)
    allow_unencrypted = r.boolean("allow_unencrypted_storage", default=False)

    admin_r = r.section("admin")
    admin = AdminConfig(listen=admin_r.listen("listen", default="127.0.0.1:8443"))

    tls_r = r.section("tls")
    tls_cert = tls_r.path("certificate", base, default=None, must_exist=True)
    tls_key = tls_r.secret("private_key", base, environ, production=production)
    tls_chain = tls_r.path("chain", base, default=None, must_exist=True, required=False)

    sec_r = r.section("secrets")
    jwt_key = sec_r.secret(
        "jwt_signing_key", base, environ, production=production, required=production
    ) or Secret(DEV_JWT_REFERENCE, DEV_JWT_SIGNING_KEY)
    audit_key = sec_r.secret("audit_signing_key", base, environ, production=production)

    audit_r = r.section("audit")
    audit = AuditConfig(
        checkpoint_every=audit_r.integer("checkpoint_every", 100, minimum=1),
        checkpoint_interval_seconds=audit_r.integer(
            "checkpoint_interval_seconds", 600, minimum=10
        ),
    )
    log_r = r.section("log")
    log = LogConfig(
        format=log_r.choice("format", LOG_FORMATS, "auto"),
        level=log_r.choice("level", LOG_LEVELS, "info"),
    )
    sip_r = r.section("sip")
    sip = SipConfig(
        tls_listen=sip_r.listen("tls_listen", default="0.0.0.0:5061"),
        plaintext_enabled=sip_r.boolean("plaintext_enabled", default=False),
        plaintext_listen=sip_r.listen("plaintext_listen", default="0.0.0.0:5060"),
        internal_subnets=sip_r.networks("internal_subnets"),
        failed_register_limit=sip_r.integer("failed_register_limit", 5, minimum=1, maximum=1000),
        failed_register_block_seconds=sip_r.integer(
            "failed_register_block_seconds", 900, minimum=1, maximum=30 * 86400
        ),
        block_allowlist=sip_r.networks("block_allowlist"),
        min_expires=sip_r.integer("min_expires", 60, minimum=1, maximum=86400),
        max_expires=sip_r.integer("max_expires", 3600, minimum=60, maximum=86400),
        max_contacts=sip_r.integer("max_contacts", 10, minimum=1, maximum=100),
        max_connections_per_ip=sip_r.integer(
            "max_connections_per_ip", 64, minimum=1, maximum=100_000
        ),
        idle_timeout_seconds=sip_r.integer("idle_timeout_seconds", 600, minimum=10, maximum=86400),
        nonce_lifetime_seconds=sip_r.integer(
            "nonce_lifetime_seconds", 300, minimum=10, maximum=3600
        ),
        digest_algorithms=sip_r.subset(
            "digest_algorithms", DIGEST_ALGORITHMS, default=DIGEST_ALGORITHMS
        ),
        advertised_host=sip_r.host("advertised_host"),
        max_call_seconds=sip_r.integer("max_call_seconds", 14400, minimum=60, maximum=7 * 86400),
        dns_servers=sip_r.addresses("dns_servers"),
    )

    if sip.plaintext_enabled and not sip.internal_subnets:
        sip_r.problem("internal_subnets", "plaintext_enabled needs at least one internal subnet")
    if sip.min_expires > sip.max_expires:
        sip_r.problem("min_expires", "must not exceed max_expires")
    media_r = r.section("media")
    media = _media(media_r, sip)
    for section in (r, admin_r, tls_r, sec_r, audit_r, log_r, sip_r, media_r):
        section.reject_unknown()
    if tls_cert is None or tls_key is None or audit_key is None or data_dir is None:
        return None
    return Config(
        path=path,
        mode=mode,
        data_dir=data_dir,
        allow_unencrypted_storage=allow_unencrypted,
        admin=admin,
        tls=TLSConfig(certificate=tls_cert, private_key=tls_key, chain=tls_chain),
        secrets=SecretsConfig(jwt_signing_key=jwt_key, audit_signing_key=audit_key),
        audit=audit,
        log=log,
        sip=sip,
        media=media,
    )


def _media(r: _Reader, sip: SipConfig) -> MediaConfig:
    """The ``[media]`` section. ``listen`` defaults to the SIP TLS listener's host,
    so the relay is reachable wherever phones reach SIP (127.0.0.1 in a dev
    instance); ``advertised_address`` defaults to ``listen``, and must be given
    when that is a wildcard: SDP needs one address peers can send to."""
    listen = r.address("listen")
    if listen is None:
        listen = ipaddress.ip_address(sip.tls_listen.host)
    advertised = r.address("advertised_address")
    if advertised is None and not r.reported("advertised_address") and not r.reported("listen"):
        if listen.is_unspecified:
            r.problem(
                "advertised_address",
                f"is required when media.listen is the wildcard {listen}: the address"
                " phones and carriers send media to, written in SDP c= lines",
            )
    elif advertised is not None:
        if advertised.is_unspecified or advertised.is_multicast:
            # c=IN IP4 0.0.0.0 means "hold" (RFC 3264), not an address to send to.
            r.problem("advertised_address", f"must be a unicast address, got {advertised}")
        elif advertised.version != listen.version and listen != ipaddress.IPv6Address("::"):
            r.problem(
                "advertised_address",
                f"is IPv{advertised.version} but media.listen {listen} is IPv{listen.version}",
            )
    port_min = r.integer("port_min", MEDIA_PORT_MIN, minimum=1024, maximum=65535)
    port_max = r.integer("port_max", MEDIA_PORT_MAX, minimum=1024, maximum=65535)
    if not r.reported("port_min") and not r.reported("port_max"):
        pairs = media_port_pairs(port_min, port_max)
        if port_min >= port_max:
            r.problem("port_max", f"must be greater than port_min ({port_min}), got {port_max}")
        elif pairs < MEDIA_MIN_PAIRS:
            r.problem(
                "port_max",
                f"port_min..port_max ({port_min}..{port_max}) holds {pairs} RTP/RTCP pair(s)"
                f" (an even port and the odd one above it); one call needs {MEDIA_MIN_PAIRS}",
            )
    return MediaConfig(
        listen=str(listen),
        advertised_address=str(listen if advertised is None else advertised),
        port_min=port_min,
        port_max=port_max,
        idle_timeout=r.integer("idle_timeout", 60, minimum=1, maximum=86400),
    )


def _interpolate_tree(
    value: Any, key: str, environ: Mapping[str, str], problems: list[tuple[str, str]]
) -> Any:
    if isinstance(value, str):
        try:
            return interpolate(value, environ)
        except InterpolationError as e:
            problems.append((key, str(e)))
            return _UNRESOLVED
    if isinstance(value, dict):
        return {
            k: _interpolate_tree(v, _join(key, k), environ, problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate_tree(v, f"{key}[{i}]", environ, problems) for i, v in enumerate(value)
        ]
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_T = TypeVar("_T")
_Item = TypeVar("_Item")
_MISSING = object()
_WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104 (recognised, not bound)
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
#: Replaces a string whose ``${VAR}`` failed; its problem is already recorded.
_UNRESOLVED = object()


class _Reader:
    """Reads typed keys from one table, recording problems instead of raising."""

    def __init__(self, raw: Mapping[str, Any], prefix: str, problems: list[tuple[str, str]]):
        self._raw = raw
        self._prefix = prefix
        self._problems = problems
        self._seen: set[str] = set()
        # Keys already reported (bad type, failed ${VAR}): no second "is required"
        # or "file not found" problem for the default that stands in for them.
        self._reported: set[str] = set()

    def _key(self, key: str) -> str:
        return _join(self._prefix, key)

    def problem(self, key: str, message: str) -> None:
        self._problems.append((self._key(key), message))

    def reported(self, key: str) -> bool:
        """Whether ``key`` already has a problem of its own (so checks that relate
        it to other keys would only repeat it)."""
        return key in self._reported

    def _get(self, key: str, kind: type | tuple[type, ...], kind_name: str) -> Any:
        self._seen.add(key)
        value = self._raw.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
        if value is _UNRESOLVED:
            self._reported.add(key)
            return _MISSING
        # bool is an int in Python; TOML keeps them apart and so do we.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
            self.problem(key, f"expected {kind_name}, got {type(value).__name__}")
            self._reported.add(key)
            return _MISSING
        return value

    def section(self, key: str) -> _Reader:
        value = self._get(key, dict, "a table")
        return _Reader({} if value is _MISSING else value, self._key(key), self._problems)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "true or false")
        return default if value is _MISSING else bool(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int = 2**31) -> int:
        value = self._get(key, int, "an integer")
        if value is _MISSING:
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"must be between {minimum} and {maximum}, got {value}")
            self._reported.add(key)
            return default
        return int(value)

    def choice(self, key: str, options: tuple[_T, ...], default: _T) -> _T:
        value = self._get(key, str, "a string")
        if value is _MISSING:
            return default
        if value not in options:
            self.problem(key, f"must be one of {', '.join(map(str, options))}; got {value!r}")
            return default
        return options[options.index(value)]

    def path(
        self,
        key: str,
        base: Path,
        *,
        default: str | None,
        must_exist: bool,
        required: bool = True,
    ) -> Path | None:
        found = self._get(key, str, "a path string")
        if key in self._reported:
            return None
        value: str | None = default if found is _MISSING else found
        if value is None:
            if required:
                self.problem(key, "is required")
            return None
        path = base / value
        if must_exist and not path.exists():
            self.problem(key, f"file not found: {path}")
        return path

    def secret(
        self,
        key: str,
        base: Path,
        environ: Mapping[str, str],
        *,
        production: bool,
        required: bool = True,
    ) -> Secret | None:
        value = self._get(key, str, "a secret reference string")
        if value is _MISSING:
            if required and key not in self._reported:
                self.problem(key, "is required (file:PATH, env:NAME or credential:NAME)")
            return None
        try:
            return resolve_secret(value, base, environ, production=production)
        except SecretError as e:
            self.problem(key, str(e))
            return None

    def subset(
        self, key: str, allowed: tuple[str, ...], *, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        """A non-empty list drawn from ``allowed``, order kept, no repeats."""
        value = self._get(key, list, "a list of strings")
        if value is _MISSING:
            return default
        if not value or len(set(value)) != len(value) or any(v not in allowed for v in value):
            self.problem(key, f"must be a non-empty list of distinct values from {list(allowed)}")
            return default
        return tuple(str(v) for v in value)

    def host(self, key: str) -> str:
        """An IP address or DNS name, or "" when absent."""
        value = self._get(key, str, "a host name or IP address")
        if value is _MISSING:
            return ""
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_NAME.fullmatch(value):
                self.problem(key, f"not an IP address or host name: {value!r}")
                return ""
        return str(value)

    def address(self, key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """An IP address with no port or brackets, or None when absent or wrong."""
        value = self._get(key, str, "an IP address string")
        if value is _MISSING:
            return None
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.problem(key, f"not an IP address: {value!r}")
            self._reported.add(key)
            return None

    def networks(self, key: str) -> tuple[IPNetwork, ...]:
        """A list of CIDR strings (``10.0.0.0/8``, ``::1/128``); host bits are an error."""
        return self._list(
            key, "a list of CIDR strings", ipaddress.ip_network, "not a CIDR network: "
        )

    def addresses(self, key: str) -> tuple[ListenAddress, ...]:
        """A list of ``IP:port`` strings (``[v6]:port`` for IPv6)."""
        return self._list(key, "a list of IP:port strings", parse_listen, "")

    def _list(
        self, key: str, what: str, parse: Callable[[str], _Item], problem: str
    ) -> tuple[_Item, ...]:
        """Each item of a list parsed; a bad one is reported under its index."""
        value = self._get(key, list, what)
        if value is _MISSING:
            return ()
        out = []
        for i, item in enumerate(value):
            try:
                out.append(parse(str(item)))
            except ValueError as e:
                self.problem(f"{key}[{i}]", f"{problem}{e}")
        return tuple(out)

    def listen(self, key: str, default: str) -> ListenAddress:
        value = self._get(key, str, "a host:port string")
        text = default if value is _MISSING else value
        try:
            return parse_listen(text)
        except ValueError as e:
            self.problem(key, str(e))
            return parse_listen(default)

    def reject_unknown(self) -> None:
        for key in self._raw:
            if key not in self._seen:
                self.problem(key, "unknown key")


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def parse_listen(text: str) -> ListenAddress:
    """Parse ``host:port`` or ``[v6]:port``, checking the host is an IP address."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 host in brackets, [host]:port; got {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address, got {host!r}") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return ListenAddress(host, port)


def redacted_summary(config: Config) -> Iterator[str]:
    """Lines describing ``config`` for ``check-config``; secrets appear only by reference."""
    yield f"config: {config.path}"
    yield f"mode: {config.mode}"
    yield f"data_dir: {config.data_dir}"
    yield f"allow_unencrypted_storage: {str(config.allow_unencrypted_storage).lower()}"
    yield f"admin.listen: {config.admin.listen}"
    yield f"tls.certificate: {config.tls.certificate}"
    yield f"tls.private_key: {config.tls.private_key}"
    yield f"tls.chain: {config.tls.chain or '(none)'}"
    yield f"secrets.jwt_signing_key: {config.secrets.jwt_signing_key}"
    yield f"secrets.audit_signing_key: {config.secrets.audit_signing_key}"
    yield f"audit.checkpoint_every: {config.audit.checkpoint_every}"
    yield f"audit.checkpoint_interval_seconds: {config.audit.checkpoint_interval_seconds}"
    yield f"log.format: {config.log.format}"
    yield f"log.level: {config.log.level}"
    sip = config.sip
    yield f"sip.tls_listen: {sip.tls_listen}"
    yield f"sip.plaintext_enabled: {str(sip.plaintext_enabled).lower()}"
    yield f"sip.plaintext_listen: {sip.plaintext_listen}"
    yield f"sip.internal_subnets: {', '.join(map(str, sip.internal_subnets)) or '(none)'}"
    yield f"sip.failed_register_limit: {sip.failed_register_limit}"
    yield f"sip.failed_register_block_seconds: {sip.failed_register_block_seconds}"
    yield f"sip.block_allowlist: {', '.join(map(str, sip.block_allowlist)) or '(none)'}"
    yield f"sip.min_expires: {sip.min_expires}"
    yield f"sip.max_expires: {sip.max_expires}"
    yield f"sip.max_contacts: {sip.max_contacts}"
    yield f"sip.max_connections_per_ip: {sip.max_connections_per_ip}"
    yield f"sip.idle_timeout_seconds: {sip.idle_timeout_seconds}"
    yield f"sip.nonce_lifetime_seconds: {sip.nonce_lifetime_seconds}"
    yield f"sip.digest_algorithms: {', '.join(sip.digest_algorithms)}"
    yield f"sip.advertised_host: {sip.advertised_host or '(the listen address)'}"
    yield f"sip.max_call_seconds: {sip.max_call_seconds}"
    yield f"sip.dns_servers: {', '.join(map(str, sip.dns_servers)) or '(/etc/resolv.conf)'}"
    media = config.media
    yield f"media.listen: {media.listen}"
    yield f"media.advertised_address: {media.advertised_address}"
    yield f"media.port_min: {media.port_min}"
    yield f"media.port_max: {media.port_max}"
    yield f"media.idle_timeout: {media.idle_timeout}"
