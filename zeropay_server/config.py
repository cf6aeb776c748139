"""Configuration from the environment, with the design document's variable names.

Every value is validated at start-up; bad ones stop the server with a message naming each
variable at fault (never its value, which may be a secret). With neither ``REDIS_URL`` /
``REDIS_CLUSTER_ENABLED`` nor ``DATABASE_URL`` the server runs on the in-memory adapters (the
embedded default) with keys generated at start-up; with either, it needs both, and refuses to
start without configured master keys, pepper and receipt key.

Secrets are base64 (standard or URL-safe alphabet):

- ``ZEROPAY_MASTER_KEYS``: ``1:<32 bytes>,2:<32 bytes>``; new seals use
  ``ZEROPAY_MASTER_KEY_CURRENT`` (default: the highest version). Old versions keep opening.
- ``ZEROPAY_PEPPER``: at least 32 bytes, the HMAC key of the verifiers.
- ``ZEROPAY_RECEIPT_SIGNING_KEY``: a 32-byte Ed25519 seed; ``ZEROPAY_RECEIPT_KEY_ID`` names it.
- ``ZEROPAY_RECEIPT_RETIRED_KEYS`` (public, not secret): ``KID:PUBLIC_KEY:UNTIL,...``, the keys
  a rotation retired, each published by ``/v1/keys`` until ``UNTIL`` (ISO 8601 with a time
  zone) so that the receipts it signed can still be checked. ``check-config`` prints the
  current key's public half to copy here when it is replaced.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import ipaddress
import os
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.audit import DEFAULT_AUDIT_BUFFER_SIZE, DEFAULT_RECLAIM_IDLE_MS
from adapters.postgres import (
    DEFAULT_POOL_MIN,
    DEFAULT_POOL_SIZE,
    DEFAULT_REPLICA_POOL_MAX,
    DEFAULT_REPLICA_POOL_MIN,
)
from zeropay_proto import (
    DEFAULT_PBKDF2_ITERATIONS,
    DEFAULT_RATE_LIMIT_GLOBAL,
    DEFAULT_RATE_LIMIT_PER_IP,
    DEFAULT_RATE_LIMIT_PER_USER,
    MasterKeyring,
    RemoteProtocolError,
    b64url,
)
from zeropay_proto.admission import (
    DEFAULT_AUTH_FAILURES_PER_IP,
    DEFAULT_GLOBAL_RESERVE,
    DEFAULT_LIMITER_FAIL_OPEN_MS,
    DEFAULT_MERCHANT_FAILURES,
    DEFAULT_RATE_LIMIT_SHARDS,
)
from zeropay_proto.merchants import parse_api_key
from zeropay_proto.passkeys import RelyingParty
from zeropay_proto.session import DEFAULT_LOCKOUT_DURATIONS_SECONDS, DEFAULT_SESSION_TTL_SECONDS

from .merchants import DEFAULT_MAX_STALENESS_SECONDS

#: The design document's AUDIT_FLUSH_INTERVAL, in milliseconds.
DEFAULT_AUDIT_FLUSH_INTERVAL_MS = 5000
#: The original service's PSP checkout session lifetime (seed, "Move PSP Sessions", 1800 s).
DEFAULT_PSP_SESSION_TTL = 1800
DEFAULT_BIND = "127.0.0.1:8080"
#: What a server process does (``ZEROPAY_ROLE`` or ``--role``): ``all`` serves the API and
#: runs the audit flusher in one of its processes; ``api`` only serves (its events wait in the
#: Redis streams for a flusher elsewhere); ``audit`` only flushes (and answers /health and
#: /metrics). A deployment of many API instances runs them as ``api`` beside one or two
#: ``audit`` instances, so the flushers stay few whatever the number of API processes.
ROLES = ("all", "api", "audit")
#: A sealed record stays cached in Redis this long after it was read from PostgreSQL.
DEFAULT_RECORD_CACHE_TTL = 3600
#: Beyond the dependency deadlines, how long an enrollment change keeps the record uncached.
RECORD_HOLD_MARGIN_MS = 4_000
#: Deadline for one call to Redis or PostgreSQL (the Trio side of every call), in ms
#: (``REDIS_TIMEOUT_MS``, ``DB_TIMEOUT_MS``). A healthy call takes well under 10 ms here
#: (BENCHMARKS.md); past a second the store is as good as down, and a fast 503 serves the
#: client better than a slow one.
DEFAULT_DEPENDENCY_TIMEOUT_MS = 1000
#: An idle keep-alive connection is closed after this many seconds
#: (``HTTP_KEEP_ALIVE_TIMEOUT``). Keep it above the load balancer's idle timeout.
DEFAULT_KEEP_ALIVE_TIMEOUT = 20
#: A request's body must have arrived this many seconds after its headers
#: (``HTTP_READ_TIMEOUT``), or the answer is 408 and the connection closes: a slow or stalled
#: client cannot hold a connection for good. (A stall inside the headers is bounded by the
#: keep-alive timeout, since the connection is still idle then.)
DEFAULT_READ_TIMEOUT = 10
#: Open client connections per server process (``HTTP_MAX_CONNECTIONS``); further ones wait
#: in the listen backlog. Bounded below the process's descriptor limit (see ``serve``).
DEFAULT_MAX_CONNECTIONS = 1000
#: Open connections one client address may hold per process
#: (``HTTP_MAX_CONNECTIONS_PER_PEER``; 0: no bound; trusted proxies are not bound): a tenth of
#: the process's connections, more than a merchant's backend keeps in its pool.
DEFAULT_MAX_CONNECTIONS_PER_PEER = 100


#: Sessions one merchant may open per minute (``RATE_LIMIT_PER_MERCHANT``): the global limit's
#: share of one large merchant; 0 switches it off.
DEFAULT_RATE_LIMIT_PER_MERCHANT = 600
#: The replaced ``MERCHANT_LOCKS_PER_HOUR`` (accounts a merchant's sessions may lock an hour)
#: is still read for one release, as that many accounts' five failures each.
FAILURES_PER_LOCK = 5


T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid: ``problems`` names each variable at fault (the
    message is all of them, one per line)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Problems:
    """What :func:`load_settings` found wrong, every problem rather than the first."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, parse: Callable[[], T], fallback: T) -> T:
        """``parse()``, or ``fallback`` with its problem noted."""
        try:
            return parse()
        except ConfigError as exc:
            self.found.extend(exc.problems)
            return fallback

    def require(self, holds: bool, problem: str) -> None:
        if not holds:
            self.found.append(problem)


@dataclass(frozen=True, kw_only=True)
class RetiredReceiptKey:
    """A receipt key no longer signing, still published until ``until_ms`` so that receipts
    it signed can be checked (``ZEROPAY_RECEIPT_RETIRED_KEYS``)."""

    key_id: str
    public_key: bytes
    until_ms: int


def _retired_receipt_keys(raw: str) -> tuple[RetiredReceiptKey, ...]:
    found = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key_id, _, rest = item.partition(":")
        material, _, until = rest.partition(":")
        problem = ConfigError(
            "ZEROPAY_RECEIPT_RETIRED_KEYS must be KID:BASE64_PUBLIC_KEY:ISO_8601_TIME,... "
            "(a 32-byte Ed25519 public key, a time with its zone)"
        )
        try:
            moment = dt.datetime.fromisoformat(until)
        except ValueError:
            raise problem from None
        public = _b64("ZEROPAY_RECEIPT_RETIRED_KEYS", material) if material else b""
        if not key_id or len(public) != 32 or moment.tzinfo is None:
            raise problem
        found.append(
            RetiredReceiptKey(
                key_id=key_id, public_key=public, until_ms=int(moment.timestamp() * 1000)
            )
        )
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class Secrets:
    """Key material. Generated only for the embedded default."""

    keyring: MasterKeyring
    pepper: bytes
    signing_seed: bytes
    signing_key_id: str
    generated: bool

    def __repr__(self) -> str:  # never print key material
        return f"Secrets(key_versions={sorted(self.keyring.keys)}, generated={self.generated})"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server reads from its environment."""

    redis_url: str | None = None
    redis_cluster_nodes: tuple[tuple[str, int], ...] = ()
    redis_prefix: str = "zp"
    session_ttl: int = DEFAULT_SESSION_TTL_SECONDS
    lockout_durations: tuple[int, ...] = DEFAULT_LOCKOUT_DURATIONS_SECONDS
    database_url: str | None = None
    db_pool_size: int = DEFAULT_POOL_SIZE
    db_pool_min: int = DEFAULT_POOL_MIN
    db_replica_url: str | None = None
    db_replica_pool_max: int = DEFAULT_REPLICA_POOL_MAX
    db_replica_pool_min: int = DEFAULT_REPLICA_POOL_MIN
    db_statement_cache_size: int = 0
    db_auto_migrate: bool = False
    #: Webhook URLs may be plain HTTP to loopback addresses (development and tests only).
    webhooks_allow_loopback: bool = False
    rate_limit_global: int = DEFAULT_RATE_LIMIT_GLOBAL
    rate_limit_per_ip: int = DEFAULT_RATE_LIMIT_PER_IP
    rate_limit_per_user: int = DEFAULT_RATE_LIMIT_PER_USER
    rate_limit_per_merchant: int = DEFAULT_RATE_LIMIT_PER_MERCHANT
    #: Verifications that may fail in one merchant's sessions per hour before its sessions
    #: are refused (``MERCHANT_FAILURES_PER_HOUR``; 0 switches it off). PSD2's five-attempt
    #: rule stays as it is: this does not let anyone guess more, it stops a merchant key from
    #: being used to lock account after account.
    merchant_failures_per_hour: int = DEFAULT_MERCHANT_FAILURES
    #: How long merchant keys are trusted without an answer from PostgreSQL or Redis
    #: (``MERCHANT_KEYS_MAX_STALENESS``, seconds): then every key is refused (503).
    merchant_keys_max_staleness: int = DEFAULT_MAX_STALENESS_SECONDS
    #: The global limit's shards (``RATE_LIMIT_SHARDS``), each with its share of the limit.
    rate_limit_shards: int = DEFAULT_RATE_LIMIT_SHARDS
    #: Requests an address sends per window before the global limit counts it
    #: (``RATE_LIMIT_GLOBAL_RESERVE``).
    rate_limit_global_reserve: int = DEFAULT_GLOBAL_RESERVE
    #: Wrong merchant keys an address may present per window (``RATE_LIMIT_AUTH_FAILURES``).
    rate_limit_auth_failures: int = DEFAULT_AUTH_FAILURES_PER_IP
    #: Seconds limiters whose Redis slot is unreachable admit without counting
    #: (``RATE_LIMIT_FAIL_OPEN_SECONDS``; 0: they fail closed at once).
    rate_limit_fail_open_seconds: int = DEFAULT_LIMITER_FAIL_OPEN_MS // 1000
    #: The embedded default's merchant key (generated, and printed at start, when unset).
    demo_merchant_key: str | None = field(default=None, repr=False)
    audit_buffer_size: int = DEFAULT_AUDIT_BUFFER_SIZE
    audit_flush_interval_ms: int = DEFAULT_AUDIT_FLUSH_INTERVAL_MS
    audit_reclaim_idle_ms: int = DEFAULT_RECLAIM_IDLE_MS
    psp_session_ttl: int = DEFAULT_PSP_SESSION_TTL
    pbkdf2_iterations: int = DEFAULT_PBKDF2_ITERATIONS
    crypto_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    bind: str = DEFAULT_BIND
    workers: int = 1
    role: str = "all"
    record_cache_ttl: int = DEFAULT_RECORD_CACHE_TTL
    redis_timeout: float = DEFAULT_DEPENDENCY_TIMEOUT_MS / 1000
    db_timeout: float = DEFAULT_DEPENDENCY_TIMEOUT_MS / 1000
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    read_timeout: int = DEFAULT_READ_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    log_level: str = "INFO"
    #: Passkeys' relying party (``WEBAUTHN_RP_ID``, ``WEBAUTHN_ORIGINS``); ``None``: off.
    relying_party: RelyingParty | None = None
    retired_receipt_keys: tuple[RetiredReceiptKey, ...] = ()
    secrets: Secrets = field(repr=False)

    @property
    def embedded(self) -> bool:
        """True when running on the in-memory adapters."""
        return self.redis_url is None and not self.redis_cluster_nodes

    @property
    def record_hold_ms(self) -> int:
        """How long an enrollment change holds the user's record cache (nothing may be
        cached): longer than a request that read the old row can take to cache it. Between
        its PostgreSQL read and its Redis write (each bounded by its deadline) a request
        only computes; the margin covers that and scheduling under load. Short, because
        while it lasts that user's initiates read PostgreSQL, which an unknown user's do
        not (8 s with the default deadlines)."""
        return RECORD_HOLD_MARGIN_MS + 2 * round(1000 * (self.redis_timeout + self.db_timeout))

    @property
    def serves_api(self) -> bool:
        """Whether this instance answers the API routes (every role but ``audit``)."""
        return self.role != "audit"

    def flushes_audit(self, worker: int) -> bool:
        """Whether server process number ``worker`` (0-based, of ``workers``) runs the audit
        flusher: an ``audit`` instance does; under ``all``, only the first process."""
        return self.role == "audit" or (self.role == "all" and worker == 0)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _durations(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be whole seconds, comma-separated") from None
    if min(values) < 1:
        raise ConfigError(f"{name} must be at least 1 second each")
    return values


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false")


def _b64(name: str, text: str) -> bytes:
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} must be base64") from None


def _nodes(raw: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for item in raw.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("REDIS_CLUSTER_NODES must be host:port,host:port,...")
        nodes.append((host, int(port)))
    return tuple(nodes)


def _proxies(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in raw.split(",") if p.strip()
        )
    except ValueError:
        raise ConfigError(
            "TRUSTED_PROXIES must be addresses or CIDR ranges, comma-separated"
        ) from None


def _bind(raw: str) -> str:
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError("the bind address must be HOST:PORT")
    return raw


def _relying_party(env: Mapping[str, str], *, embedded: bool, bind: str) -> RelyingParty | None:
    """Passkeys' relying party. The embedded default is ``localhost`` at the bound port (a
    browser on this machine); elsewhere passkeys are off until ``WEBAUTHN_RP_ID`` is set."""
    rp_id = env.get("WEBAUTHN_RP_ID") or ("localhost" if embedded else None)
    if rp_id is None:
        return None
    port = bind.rpartition(":")[2]
    default = f"http://localhost:{port}" if rp_id == "localhost" else f"https://{rp_id}"
    origins = tuple(o.strip() for o in env.get("WEBAUTHN_ORIGINS", default).split(",") if o)
    for origin in origins:
        parsed = urllib.parse.urlsplit(origin)
        host = parsed.hostname or ""
        if parsed.scheme not in ("https", "http") or not (
            host == rp_id or host.endswith("." + rp_id)
        ):
            raise ConfigError(
                f"WEBAUTHN_ORIGINS: {origin!r} is not an http(s) origin on {rp_id} or below it"
            )
    return RelyingParty(rp_id=rp_id, name=env.get("WEBAUTHN_RP_NAME", "ZeroPay"), origins=origins)


def _demo_merchant_key(env: Mapping[str, str], *, embedded: bool) -> str | None:
    raw = env.get("ZEROPAY_DEMO_MERCHANT_KEY") or None
    if raw is None:
        return None
    if not embedded:
        raise ConfigError(
            "ZEROPAY_DEMO_MERCHANT_KEY is for the embedded default only: "
            "add merchant keys with 'zeropay-server merchants add'"
        )
    try:
        parse_api_key(raw)
    except RemoteProtocolError:
        raise ConfigError("ZEROPAY_DEMO_MERCHANT_KEY must be a zpk_... merchant key") from None
    return raw


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _generated_secrets() -> Secrets:
    """The embedded default's keys, drawn at start (and what stands in for keys that failed
    to parse until :func:`load_settings` raises)."""
    return Secrets(
        keyring=MasterKeyring(keys={1: secrets.token_bytes(32)}, current=1),
        pepper=secrets.token_bytes(32),
        signing_seed=secrets.token_bytes(32),
        signing_key_id="embedded",
        generated=True,
    )


def _keyring(env: Mapping[str, str]) -> MasterKeyring:
    keys: dict[int, bytes] = {}
    for item in env["ZEROPAY_MASTER_KEYS"].split(","):
        version, _, material = item.strip().partition(":")
        if not version.isdigit() or not 1 <= int(version) <= 0xFFFF:
            raise ConfigError(
                "ZEROPAY_MASTER_KEYS must be VERSION:BASE64,... with versions 1-65535"
            )
        key = _b64("ZEROPAY_MASTER_KEYS", material)
        if len(key) != 32:
            raise ConfigError("ZEROPAY_MASTER_KEYS entries must be 32 bytes")
        keys[int(version)] = key
    current = _int(env, "ZEROPAY_MASTER_KEY_CURRENT", max(keys), minimum=1)
    if current not in keys:
        raise ConfigError("ZEROPAY_MASTER_KEY_CURRENT names a version not in ZEROPAY_MASTER_KEYS")
    return MasterKeyring(keys=keys, current=current)


def _pepper(env: Mapping[str, str]) -> bytes:
    pepper = _b64("ZEROPAY_PEPPER", env["ZEROPAY_PEPPER"])
    if len(pepper) < 32:
        raise ConfigError("ZEROPAY_PEPPER must be at least 32 bytes")
    return pepper


def _signing_seed(env: Mapping[str, str]) -> bytes:
    seed = _b64("ZEROPAY_RECEIPT_SIGNING_KEY", env["ZEROPAY_RECEIPT_SIGNING_KEY"])
    if len(seed) != 32:
        raise ConfigError("ZEROPAY_RECEIPT_SIGNING_KEY must be a 32-byte Ed25519 seed")
    return seed


def _secrets(env: Mapping[str, str], *, embedded: bool, problems: _Problems) -> Secrets | None:
    """The configured keys (generated only in the embedded default), or ``None`` with every
    problem noted."""
    names = ("ZEROPAY_MASTER_KEYS", "ZEROPAY_PEPPER", "ZEROPAY_RECEIPT_SIGNING_KEY")
    missing = [n for n in names if not env.get(n)]
    if missing and embedded:
        return _generated_secrets()
    if missing:
        problems.require(
            False,
            f"{', '.join(missing)} must be set when Redis or PostgreSQL is configured: "
            "keys are never generated outside the embedded default",
        )
        return None
    keyring = problems.check(lambda: _keyring(env), None)
    pepper = problems.check(lambda: _pepper(env), None)
    seed = problems.check(lambda: _signing_seed(env), None)
    if keyring is None or pepper is None or seed is None:
        return None
    return Secrets(
        keyring=keyring,
        pepper=pepper,
        signing_seed=seed,
        signing_key_id=env.get("ZEROPAY_RECEIPT_KEY_ID", "receipt-1"),
        generated=False,
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; raises :class:`ConfigError` naming every
    problem found, not only the first."""
    env = os.environ if env is None else env
    problems = _Problems()

    def integer(name: str, default: int, *, minimum: int = 0) -> int:
        return problems.check(lambda: _int(env, name, default, minimum=minimum), default)

    def boolean(name: str, default: bool) -> bool:
        return problems.check(lambda: _bool(env, name, default), default)

    cluster = boolean("REDIS_CLUSTER_ENABLED", False)
    nodes: tuple[tuple[str, int], ...] = ()
    if cluster:
        nodes = problems.check(lambda: _nodes(env.get("REDIS_CLUSTER_NODES", "")), nodes)
    problems.require(
        not cluster or bool(nodes),
        "REDIS_CLUSTER_NODES is required when REDIS_CLUSTER_ENABLED is true",
    )
    redis_url = None if cluster else (env.get("REDIS_URL") or None)
    database_url = env.get("DATABASE_URL") or None
    uses_redis = redis_url is not None or cluster
    problems.require(
        uses_redis == (database_url is not None),
        "REDIS_URL (or REDIS_CLUSTER_ENABLED) and DATABASE_URL go together: set both, "
        "or neither for the embedded in-memory default",
    )
    embedded = not uses_redis
    workers = integer("ZEROPAY_WORKERS", 1, minimum=1)
    problems.require(
        not (embedded and workers > 1),
        "ZEROPAY_WORKERS above 1 needs Redis and PostgreSQL (memory is per process)",
    )
    role = env.get("ZEROPAY_ROLE", "all")
    problems.require(role in ROLES, f"ZEROPAY_ROLE must be one of {', '.join(ROLES)}, not {role!r}")
    problems.require(
        not (embedded and role != "all"),
        "ZEROPAY_ROLE api or audit needs Redis and PostgreSQL (shared streams)",
    )
    problems.require(
        not (role == "audit" and workers > 1),
        "ZEROPAY_ROLE audit runs one process: ZEROPAY_WORKERS must be 1",
    )
    # ZEROPAY_BIND (--bind), else PORT on loopback, else 127.0.0.1:8080.
    port_only = f"127.0.0.1:{env['PORT']}" if env.get("PORT") else DEFAULT_BIND
    bind = problems.check(lambda: _bind(env.get("ZEROPAY_BIND", port_only)), DEFAULT_BIND)
    keys = _secrets(env, embedded=embedded, problems=problems)
    settings = Settings(
        redis_url=redis_url,
        redis_cluster_nodes=nodes,
        redis_prefix=env.get("REDIS_PREFIX", "zp"),
        session_ttl=integer("REDIS_SESSION_TTL", DEFAULT_SESSION_TTL_SECONDS, minimum=1),
        lockout_durations=problems.check(
            lambda: _durations(env, "LOCKOUT_DURATIONS", DEFAULT_LOCKOUT_DURATIONS_SECONDS),
            DEFAULT_LOCKOUT_DURATIONS_SECONDS,
        ),
        database_url=database_url,
        db_pool_size=integer("DB_POOL_SIZE", DEFAULT_POOL_SIZE, minimum=1),
        db_pool_min=integer("DB_POOL_MIN", DEFAULT_POOL_MIN),
        db_replica_url=env.get("DB_REPLICA_URL") or None,
        db_replica_pool_max=integer("DB_REPLICA_POOL_MAX", DEFAULT_REPLICA_POOL_MAX, minimum=1),
        db_replica_pool_min=integer("DB_REPLICA_POOL_MIN", DEFAULT_REPLICA_POOL_MIN),
        db_statement_cache_size=integer("DB_STATEMENT_CACHE_SIZE", 0),
        db_auto_migrate=boolean("DB_AUTO_MIGRATE", False),
        webhooks_allow_loopback=boolean("WEBHOOKS_ALLOW_LOOPBACK", False),
        rate_limit_global=integer("RATE_LIMIT_GLOBAL", DEFAULT_RATE_LIMIT_GLOBAL),
        rate_limit_per_ip=integer("RATE_LIMIT_PER_IP", DEFAULT_RATE_LIMIT_PER_IP),
        rate_limit_per_user=integer("RATE_LIMIT_PER_USER", DEFAULT_RATE_LIMIT_PER_USER),
        rate_limit_per_merchant=integer("RATE_LIMIT_PER_MERCHANT", DEFAULT_RATE_LIMIT_PER_MERCHANT),
        merchant_failures_per_hour=integer(
            "MERCHANT_FAILURES_PER_HOUR",
            FAILURES_PER_LOCK * integer("MERCHANT_LOCKS_PER_HOUR", 0)
            if "MERCHANT_LOCKS_PER_HOUR" in env
            else DEFAULT_MERCHANT_FAILURES,
        ),
        merchant_keys_max_staleness=integer(
            "MERCHANT_KEYS_MAX_STALENESS", DEFAULT_MAX_STALENESS_SECONDS, minimum=1
        ),
        rate_limit_shards=integer("RATE_LIMIT_SHARDS", DEFAULT_RATE_LIMIT_SHARDS, minimum=1),
        rate_limit_global_reserve=integer("RATE_LIMIT_GLOBAL_RESERVE", DEFAULT_GLOBAL_RESERVE),
        rate_limit_auth_failures=integer("RATE_LIMIT_AUTH_FAILURES", DEFAULT_AUTH_FAILURES_PER_IP),
        rate_limit_fail_open_seconds=integer(
            "RATE_LIMIT_FAIL_OPEN_SECONDS", DEFAULT_LIMITER_FAIL_OPEN_MS // 1000
        ),
        demo_merchant_key=problems.check(lambda: _demo_merchant_key(env, embedded=embedded), None),
        audit_buffer_size=integer("AUDIT_BUFFER_SIZE", DEFAULT_AUDIT_BUFFER_SIZE, minimum=1),
        audit_flush_interval_ms=integer(
            "AUDIT_FLUSH_INTERVAL", DEFAULT_AUDIT_FLUSH_INTERVAL_MS, minimum=1
        ),
        audit_reclaim_idle_ms=integer("AUDIT_RECLAIM_IDLE_MS", DEFAULT_RECLAIM_IDLE_MS, minimum=1),
        psp_session_ttl=integer("PSP_SESSION_TTL", DEFAULT_PSP_SESSION_TTL, minimum=1),
        pbkdf2_iterations=integer("PBKDF2_ITERATIONS", DEFAULT_PBKDF2_ITERATIONS, minimum=1),
        # Each server process has its own pool: together they use the cores once.
        crypto_workers=integer(
            "CRYPTO_WORKERS", max(1, (os.cpu_count() or 1) // workers), minimum=1
        ),
        trusted_proxies=problems.check(lambda: _proxies(env.get("TRUSTED_PROXIES", "")), ()),
        bind=bind,
        workers=workers,
        role=role,
        record_cache_ttl=integer("RECORD_CACHE_TTL", DEFAULT_RECORD_CACHE_TTL, minimum=1),
        redis_timeout=integer("REDIS_TIMEOUT_MS", DEFAULT_DEPENDENCY_TIMEOUT_MS, minimum=1) / 1000,
        db_timeout=integer("DB_TIMEOUT_MS", DEFAULT_DEPENDENCY_TIMEOUT_MS, minimum=1) / 1000,
        keep_alive_timeout=integer(
            "HTTP_KEEP_ALIVE_TIMEOUT", DEFAULT_KEEP_ALIVE_TIMEOUT, minimum=1
        ),
        read_timeout=integer("HTTP_READ_TIMEOUT", DEFAULT_READ_TIMEOUT, minimum=1),
        max_connections=integer("HTTP_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, minimum=1),
        max_connections_per_peer=integer(
            "HTTP_MAX_CONNECTIONS_PER_PEER", DEFAULT_MAX_CONNECTIONS_PER_PEER
        ),
        log_level=problems.check(lambda: _log_level(env.get("LOG_LEVEL", "INFO")), "INFO"),
        relying_party=problems.check(
            lambda: _relying_party(env, embedded=embedded, bind=bind), None
        ),
        retired_receipt_keys=problems.check(
            lambda: _retired_receipt_keys(env.get("ZEROPAY_RECEIPT_RETIRED_KEYS", "")), ()
        ),
        secrets=keys if keys is not None else _generated_secrets(),  # (raised below if None)
    )
    if problems.found:
        raise ConfigError(*problems.found)
    return settings


#: What :func:`described` prints in place of a secret.
REDACTED = "<redacted>"


def described(settings: Settings) -> dict[str, object]:
    """The effective configuration as JSON values, every secret redacted: key material, the
    demo merchant key, and passwords in URLs (``zeropay-server check-config``)."""
    fields: dict[str, object] = {}
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.name == "secrets":
            keys: Secrets = value
            value = {
                "master_key_versions": sorted(keys.keyring.keys),
                "master_key_current": keys.keyring.current,
                "master_keys": REDACTED,
                "pepper": REDACTED,
                "receipt_signing_key": REDACTED,
                "receipt_key_id": keys.signing_key_id,
                "receipt_public_key": b64url(receipt_public_key(keys.signing_seed)),
                "generated": keys.generated,
            }
        elif item.name == "demo_merchant_key" and value is not None:
            value = REDACTED
        elif item.name.endswith("_url") and value is not None:
            value = _without_password(value)
        elif item.name == "redis_cluster_nodes":
            value = [f"{host}:{port}" for host, port in value]
        elif item.name == "trusted_proxies":
            value = [str(network) for network in value]
        elif item.name == "retired_receipt_keys":
            value = [
                {"kid": k.key_id, "until_ms": k.until_ms, "public_key": b64url(k.public_key)}
                for k in value
            ]
        elif item.name == "relying_party" and value is not None:
            value = {"rp_id": value.rp_id, "name": value.name, "origins": list(value.origins)}
        fields[item.name] = value
    return fields


def receipt_public_key(seed: bytes) -> bytes:
    """The public half of a receipt signing seed: what ``/v1/keys`` publishes, and what
    ``ZEROPAY_RECEIPT_RETIRED_KEYS`` names once the seed is replaced."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{REDACTED}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
