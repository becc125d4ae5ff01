"""Settings: command-line flag, then environment variable, then `config.toml` in the data
directory, then default. One place, so `serve`, `audit` and `keys` agree on where things are."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from copyledger.ledger.errors import InvalidInput, said
from copyledger.service.fsperm import private_dir

ENV_PREFIX = "COPYLEDGER_"
CONFIG_FILE = "config.toml"
DEFAULT_DATA_DIR = "copyledger-data"
CRYPTO_SUITES = ("standard", "sm")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database: str = ""  # SQLAlchemy URL; empty = SQLite file in the data directory
    origin: str = "localhost/copyledger"
    host: str = "127.0.0.1"
    port: int = 8000
    linger_ms: float = 0.5  # how long the sequencer waits for more entries before sealing (D95)
    max_batch: int = 10_000
    heartbeat_s: float = 300.0  # idle: seal an empty, freshly signed block this often
    max_body_bytes: int = 65_536  # JSON request bodies
    max_upload_bytes: int = 2 * 1024**3  # multipart file uploads (hashed while streaming)
    log_level: str = "info"
    log_json: bool = True
    key_passphrase_env: str = "COPYLEDGER_KEY_PASSPHRASE"
    timestamp_rate_per_s: float = 50.0  # POST /v1/timestamp, per client address
    key_backend: str = "file"  # "file" (PEM files) or "pkcs11" (keys inside an HSM token)
    pkcs11_module: str = ""  # e.g. /usr/lib/softhsm/libsofthsm2.so
    pkcs11_token_label: str = ""
    pkcs11_pin_env: str = "COPYLEDGER_HSM_PIN"  # the PIN is only ever read from this variable
    pkcs11_log_key_label: str = "copyledger-log"
    pkcs11_tsa_key_label: str = "copyledger-tsa"
    notary_url: str = ""  # a stand-alone notary (http://host:port or unix:/path): no keys here
    notary_token_env: str = "COPYLEDGER_NOTARY_TOKEN"
    external_tsas: str = ""  # comma-separated RFC 3161 TSA URLs that also stamp every block
    external_tsa_roots: str = ""  # PEM file of those TSAs' root certificates (to check tokens)
    witnesses: str = ""  # comma-separated `<url> <cosignature vkey>`: C2SP witnesses to ask
    witness_quorum: int = 1  # how many of them must cosign a checkpoint for it to be served
    witness_refresh_s: float = 300.0  # ask them again about an unchanged tree this often (D133)
    public_url: str = ""  # where clients reach this registry (links, QR codes); never from Host
    write_rate_per_s: float = 5000.0  # writes per API key per second (token bucket, per process)
    write_burst: int = 10_000  # how many writes a key may make at once before the rate applies
    body_timeout_s: float = 30.0  # a request body must arrive within this long (else 408)
    upload_timeout_s: float = 3600.0  # the same for a multipart upload to an upload path
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this long
    shutdown_grace_s: float = 20.0  # on a stop, requests still running then are cancelled
    key_recheck_s: float = 30.0  # a cached API key is looked up again after this long
    crypto_suite: str = "standard"  # "sm" adds SM3 digests and SM2 note signatures (D40)
    sm2_distid: str = "1234567812345678"  # the SM2 distinguishing ID (fixed at init, as the key)
    max_batch_body_bytes: int = 8 * 1024**2  # a batch of up to 1,000 works or deposits
    max_check_body_bytes: int = 384 * 1024  # a claim check's JSON: 2 x 2,048 ORB keypoints (D52)
    workers: int = 1  # API processes `serve` runs; one of them sequences (D48)
    # `serve --workers`: a process that does not answer its supervisor's check for this long
    # is killed and another started (uvicorn's `timeout_worker_healthcheck`, whole seconds)
    worker_healthcheck_s: float = 60.0
    idempotency_ttl_s: int = 86_400  # how long an Idempotency-Key's answer is kept (D41)
    # Several hosts on one PostgreSQL (D110): where this host's sequencer, when it is one,
    # takes entries from the other hosts' API processes (host:port); empty = this host only.
    handoff_listen: str = ""
    handoff_advertise: str = ""  # host:port the other hosts reach it at (default: the above)
    handoff_secret_env: str = "COPYLEDGER_HANDOFF_SECRET"  # the secret is only read from here

    @property
    def external_tsa_urls(self) -> list[str]:
        return [u.strip() for u in self.external_tsas.split(",") if u.strip()]

    @property
    def witness_list(self) -> list[tuple[str, str]]:
        """(add-checkpoint URL prefix, cosignature vkey) of each configured witness."""
        out = []
        for item in self.witnesses.split(","):
            if item.strip():
                parts = item.split()
                if len(parts) != 2:
                    raise InvalidInput(said("witnesses: {value} is not `<url> <vkey>`",
                                            value=repr(item.strip())))
                out.append((parts[0].rstrip("/"), parts[1]))
        return out

    @property
    def base_url(self) -> str:
        """This registry's public address: `public_url`, else the address it listens on."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def sm_suite(self) -> bool:
        """True for a registry created with the SM suite; InvalidInput for an unknown suite."""
        if self.crypto_suite not in CRYPTO_SUITES:
            raise InvalidInput(said("crypto_suite {crypto_suite} is not one of {suites}",
                                    crypto_suite=repr(self.crypto_suite),
                                    suites=", ".join(CRYPTO_SUITES)))
        return self.crypto_suite == "sm"

    @property
    def sm2_key_path(self) -> Path:
        return self.data_dir / "notary" / "log-sm2-key.pem"

    @property
    def sm2_verifier_key_path(self) -> Path:
        return self.data_dir / "notary" / "log-sm2.vkey"

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'ledger.sqlite3'}"

    @property
    def log_key_path(self) -> Path:
        return self.data_dir / "notary" / "log-key.pem"

    @property
    def tsa_dir(self) -> Path:
        return self.data_dir / "notary" / "tsa"

    @property
    def last_checkpoint_path(self) -> Path:
        """A stand-alone notary's memory of the last checkpoint it signed (D18)."""
        return self.data_dir / "notary" / "last-checkpoint"

    @property
    def verifier_key_path(self) -> Path:
        return self.data_dir / "notary" / "log.vkey"

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE


_AT_LEAST: dict[str, float] = {
    "linger_ms": 0, "max_batch": 1, "max_body_bytes": 1024, "max_upload_bytes": 1,
    "witness_quorum": 0, "write_burst": 1, "shutdown_grace_s": 0, "key_recheck_s": 0,
    "max_batch_body_bytes": 1024, "max_check_body_bytes": 1024, "workers": 1,
    "worker_healthcheck_s": 1, "idempotency_ttl_s": 1,
    "write_rate_per_s": 0, "timestamp_rate_per_s": 0,  # 0: no limit
    "witness_refresh_s": -math.inf,  # 0 or less: an unchanged tree is never asked about again
}
"""Each numeric setting's least value; those not named here must be more than 0. A value
out of range is refused rather than run: a heartbeat of 0 sealed blocks without end, a batch
of 0 or less stopped the sequencer, an infinite wait crashed its thread (D173)."""

_AT_MOST = 1e8
"""The largest value of a setting that is a float (a duration or a rate): 3 years in seconds.
Past about 9.2e9 a wait raises OverflowError (`threading.TIMEOUT_MAX`), as an infinite one did."""
_PORTS = (1, 65535)
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")  # "": unset


def _coerce(name: str, typ: Any, raw: object) -> object:
    try:
        if isinstance(raw, (list, dict)):  # a TOML array or table: read as text, it was
            raise ValueError                # a setting no one meant (D173)
        if typ in (int, "int"):
            value: float = int(str(raw))
        elif typ in (float, "float"):
            value = float(str(raw))
            if not math.isfinite(value):  # no setting means anything by NaN; "never" is inf's
                raise ValueError          # reading, which no wait or count here can take
            if value > _AT_MOST:
                raise InvalidInput(said("setting {name}: {value} is more than {most}",
                                        name=name, value=value, most=_AT_MOST))
        elif typ in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word not in _TRUE + _FALSE:  # a typo must not turn an option off unseen
                raise ValueError
            return word in _TRUE
        elif typ in (Path, "Path"):
            return Path(str(raw)).expanduser()
        else:
            return str(raw)
    except ValueError:
        raise InvalidInput(said("setting {name}: cannot read {raw} as {typ}",
                                name=name, raw=repr(raw), typ=typ)) from None
    _check_range(name, value)
    return value


def _check_range(name: str, value: float) -> None:
    if name == "port":
        if not _PORTS[0] <= value <= _PORTS[1]:
            raise InvalidInput(said("setting {name}: {value} is not a port (1 to 65535)",
                                    name=name, value=value))
    elif name in _AT_LEAST:
        if value < _AT_LEAST[name]:
            raise InvalidInput(said("setting {name}: {value} is less than {least}",
                                    name=name, value=value, least=_AT_LEAST[name]))
    elif value <= 0:
        raise InvalidInput(said("setting {name}: {value} must be more than 0",
                                name=name, value=value))


def load(data_dir: str | Path | None = None, **overrides: object) -> Settings:
    """Resolve settings. `overrides` are command-line values; None means "not given"."""
    env = os.environ
    dd = Path(
        str(data_dir)
        if data_dir is not None
        else env.get(ENV_PREFIX + "DATA_DIR", DEFAULT_DATA_DIR)
    ).expanduser()
    values: dict[str, object] = {}
    cfg_path = dd / CONFIG_FILE
    if cfg_path.exists():
        try:
            values.update(tomllib.loads(cfg_path.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise InvalidInput(said("{cfg_path}: {e}", cfg_path=cfg_path, e=e)) from None
    known = {f.name: f.type for f in fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise InvalidInput(said("{cfg_path}: unknown settings {value}",
                                cfg_path=cfg_path, value=sorted(unknown)))
    for name in known:
        if ENV_PREFIX + name.upper() in env and name != "data_dir":
            values[name] = env[ENV_PREFIX + name.upper()]
    for name, v in overrides.items():
        if name not in known:
            raise InvalidInput(said("unknown setting {name}", name=name))
        if v is not None:
            values[name] = v
    values.pop("data_dir", None)
    s = Settings(data_dir=dd)
    coerced: dict[str, Any] = {k: _coerce(k, known[k], v) for k, v in values.items()}
    s = replace(s, **coerced)
    _check_public_url(s.public_url)
    if s.log_level.lower() not in _LOG_LEVELS:
        raise InvalidInput(said("setting log_level: {value} is not one of {levels}",
                                value=repr(s.log_level), levels=", ".join(_LOG_LEVELS)))
    return s


_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def shown_url(url: str) -> str:
    """A database URL as it may be printed or logged: its password hidden, in the authority
    or in the query (`?password=`, which psycopg reads too); one that cannot be read is not
    repeated at all, since where its password is cannot be told (D173)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return said("(a database URL that cannot be read)")
    if u.get_backend_name() == "sqlite":  # a file, no password: as given (not %-escaped)
        return url
    kept = {k: v for k, v in u.query.items() if k.lower() not in _SECRET_PARAMETERS}
    return u.set(query=kept).render_as_string(hide_password=True)


def _check_public_url(url: str) -> None:
    """Links and QR codes are built from it: only a plain http(s) address with a host."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or any(c.isspace() or c in "\"'<>" for c in url):
        raise InvalidInput(said("setting public_url: {url} is not an http(s) URL like "
                                "https://registry.example.org (a path is allowed, a query is "
                                "not)", url=repr(url)))


def write_config(s: Settings) -> None:
    """Record what `init` chose (origin, database) so later commands need no flags."""
    lines = [f"origin = {_toml_str(s.origin)}"]
    if s.database:
        lines.append(f"database = {_toml_str(s.database)}")
    if s.notary_url:
        lines.append(f"notary_url = {_toml_str(s.notary_url)}")
    if s.sm_suite:
        lines += [f"crypto_suite = {_toml_str(s.crypto_suite)}",
                  f"sm2_distid = {_toml_str(s.sm2_distid)}"]
    if s.key_backend != "file":
        lines += [f"{k} = {_toml_str(str(getattr(s, k)))}" for k in (
            "key_backend", "pkcs11_module", "pkcs11_token_label", "pkcs11_pin_env",
            "pkcs11_log_key_label", "pkcs11_tsa_key_label")]
    private_dir(s.data_dir)
    # 0600: the database URL may carry a password.
    fd = os.open(s.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def _toml_str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
