"""Loading the TOML config into its typed tree, and reporting every problem at once."""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any

import pytest

from appliance import config as config_module
from appliance.config import (
    DEV_JWT_REFERENCE,
    DEV_JWT_SIGNING_KEY,
    Config,
    ConfigError,
    ListenAddress,
    MediaConfig,
    load,
    parse_listen,
    redacted_summary,
)
from appliance.devinstance import DEV_CONFIG
from appliance.pki import DevCertificates, make_dev_certificates
from appliance.store.checkpoints import CheckpointKey

JWT_KEY = b"jwt-signing-key-for-tests-0123456789-abcdefghijklmnop"


@functools.cache
def _certs() -> DevCertificates:
    return make_dev_certificates(datetime.datetime.now(datetime.UTC))


@functools.cache
def _audit_pem() -> bytes:
    return CheckpointKey.generate_pem()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _instance(root: Path, text: str | None = None, *, jwt: bytes = JWT_KEY + b"\n") -> Path:
    """Write the files BASE_CONFIG names under ``root``, then the config; return its path."""
    certs = _certs()
    _write_private(root / "tls" / "ca.crt", certs.ca_certificate)
    _write_private(root / "tls" / "server.crt", certs.server_certificate)
    _write_private(root / "tls" / "server.key", certs.server_key)
    _write_private(root / "secrets" / "jwt-signing.key", jwt)
    _write_private(root / "secrets" / "audit-signing.key", _audit_pem())
    path = root / "telemancer.toml"
    path.write_text(BASE_CONFIG if text is None else text, encoding="utf-8")
    return path


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


#: The config ``init --dev`` writes, without its comments (which repeat key text).
BASE_CONFIG = "".join(
    line for line in DEV_CONFIG.splitlines(keepends=True) if not line.startswith("#")
)
PROD_CONFIG = _edit(BASE_CONFIG, 'mode = "development"', 'mode = "production"')


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load(path, environ or {})
    return caught.value.problems


def _keys(problems: list[tuple[str, str]]) -> list[str]:
    return [key for key, _ in problems]


# --- a valid config -------------------------------------------------------------


def test_dev_config_loads_into_typed_tree(tmp_path: Path) -> None:
    """The development config loads with every key typed and every file's contents read."""
    root = tmp_path / "inst"
    config = load(_instance(root), {})
    base = root.resolve()
    certs = _certs()
    assert isinstance(config, Config)
    assert config.path == base / "telemancer.toml"
    assert config.mode == "development"
    assert not config.production
    assert config.data_dir == base
    assert config.database_path == base / "telemancer.sqlite3"
    assert config.allow_unencrypted_storage is False
    assert config.admin.listen == ListenAddress("127.0.0.1", 8443)
    assert config.tls.certificate == base / "tls" / "server.crt"
    assert config.tls.chain == base / "tls" / "ca.crt"
    assert config.tls.private_key.value == certs.server_key.rstrip(b"\n")
    assert config.tls.private_key.path == base / "tls" / "server.key"
    assert config.secrets.jwt_signing_key.value == JWT_KEY
    assert config.secrets.audit_signing_key.value == _audit_pem().rstrip(b"\n")
    assert config.audit.checkpoint_every == 100
    assert config.audit.checkpoint_interval_seconds == 600
    assert config.log.format == "auto"
    assert config.log.level == "info"


def test_relative_paths_resolve_against_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths and ``file:`` secrets are relative to the config file, not the cwd."""
    root = tmp_path / "inst"
    _instance(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tls").mkdir()  # a decoy that must not be picked
    monkeypatch.chdir(elsewhere)
    config = load(Path("..") / "inst" / "telemancer.toml", {})
    base = root.resolve()
    assert config.path == base / "telemancer.toml"
    assert config.data_dir == base
    assert config.tls.certificate == base / "tls" / "server.crt"
    assert config.tls.private_key.path == base / "tls" / "server.key"
    assert config.secrets.audit_signing_key.path == base / "secrets" / "audit-signing.key"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    """An absolute path in the config is used as written."""
    data = tmp_path / "data"
    data.mkdir()
    text = _edit(BASE_CONFIG, 'data_dir = "."', f'data_dir = "{data}"')
    config = load(_instance(tmp_path / "inst", text), {})
    assert config.data_dir == data


def test_production_config_loads(tmp_path: Path) -> None:
    """A production config with owner-only secret files loads and says it is production."""
    config = load(_instance(tmp_path, PROD_CONFIG), {})
    assert config.mode == "production"
    assert config.production


def test_mode_defaults_to_production(tmp_path: Path) -> None:
    """With no ``mode`` key the instance is production, so the refusals apply by default."""
    text = _edit(BASE_CONFIG, 'mode = "development"\n', "")
    config = load(_instance(tmp_path, text), {})
    assert config.mode == "production"
    assert config.production


def test_defaults_for_optional_keys(tmp_path: Path) -> None:
    """Only the required keys given: every other key takes its documented default.
    (SIP listens on 0.0.0.0 by default, so the relay does too, and then needs
    ``media.advertised_address``.)"""
    text = """\
mode = "development"
data_dir = "."

[tls]
certificate = "tls/server.crt"
private_key = "file:tls/server.key"

[secrets]
audit_signing_key = "file:secrets/audit-signing.key"

[media]
advertised_address = "192.0.2.10"
"""
    config = load(_instance(tmp_path, text), {})
    wildcard = "0.0.0.0"  # noqa: S104 (the default listen value, not a bind)
    assert config.media == MediaConfig(wildcard, "192.0.2.10", 20000, 29999, 60)
    assert config.allow_unencrypted_storage is False
    assert config.admin.listen == ListenAddress("127.0.0.1", 8443)
    assert config.tls.chain is None
    assert config.audit.checkpoint_every == 100
    assert config.audit.checkpoint_interval_seconds == 600
    assert config.log.format == "auto"
    assert config.log.level == "info"


def test_required_keys_reported_when_absent(tmp_path: Path) -> None:
    """An empty production config names every required key (and the missing default data_dir)."""
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    problems = dict(_problems(path))
    assert problems["tls.certificate"] == "is required"
    assert problems["tls.private_key"].startswith("is required")
    assert problems["secrets.jwt_signing_key"].startswith("is required")
    assert problems["secrets.audit_signing_key"].startswith("is required")


# --- development JWT fallback -------------------------------------------------------


def test_missing_jwt_key_in_development_uses_builtin_default(tmp_path: Path) -> None:
    """Development without ``jwt_signing_key`` falls back to the documented dev default."""
    text = _edit(BASE_CONFIG, 'jwt_signing_key = "file:secrets/jwt-signing.key"\n', "")
    config = load(_instance(tmp_path, text), {})
    assert config.secrets.jwt_signing_key.value == DEV_JWT_SIGNING_KEY
    assert config.secrets.jwt_signing_key.reference == DEV_JWT_REFERENCE
    assert config_module.DEV_JWT_SIGNING_KEY == DEV_JWT_SIGNING_KEY


def test_missing_jwt_key_in_production_is_required(tmp_path: Path) -> None:
    """Production without ``jwt_signing_key`` is a "required" problem, not the dev default."""
    text = _edit(PROD_CONFIG, 'jwt_signing_key = "file:secrets/jwt-signing.key"\n', "")
    problems = _problems(_instance(tmp_path, text))
    assert _keys(problems) == ["secrets.jwt_signing_key"]
    assert problems[0][1].startswith("is required")


# --- ${VAR} substitution ----------------------------------------------------------


def test_variables_substituted_in_values(tmp_path: Path) -> None:
    """``${VAR}`` forms are resolved in top-level and section values before validation."""
    root = tmp_path / "inst"
    _instance(root)
    text = """\
mode = "${MODE:-development}"
data_dir = "${DATA_DIR}"

[admin]
listen = "${ADMIN_HOST:-127.0.0.1}:${ADMIN_PORT}"

[tls]
certificate = "${TLS_DIR:?set TLS_DIR}/server.crt"
private_key = "file:${TLS_DIR}/server.key"

[secrets]
jwt_signing_key = "env:${JWT_VAR}"
audit_signing_key = "file:secrets/audit-signing.key"

[log]
level = "${LOG_LEVEL:-info}"

[media]
advertised_address = "${MEDIA_ADDRESS}"
"""
    path = root / "substituted.toml"
    path.write_text(text, encoding="utf-8")
    environ = {
        "DATA_DIR": str(tmp_path),
        "ADMIN_PORT": "9443",
        "ADMIN_HOST": "",
        "TLS_DIR": "tls",
        "JWT_VAR": "TELEMANCER_JWT",
        "TELEMANCER_JWT": "from-the-environment-0123456789abcdef",
        "LOG_LEVEL": "debug",
        "MEDIA_ADDRESS": "198.51.100.7",
    }
    config = load(path, environ)
    assert config.media.advertised_address == "198.51.100.7"
    assert config.mode == "development"
    assert config.data_dir == tmp_path
    assert config.admin.listen == ListenAddress("127.0.0.1", 9443)
    assert config.tls.certificate == root.resolve() / "tls" / "server.crt"
    assert config.tls.private_key.reference == "file:tls/server.key"
    assert config.secrets.jwt_signing_key.reference == "env:TELEMANCER_JWT"
    assert config.secrets.jwt_signing_key.value == b"from-the-environment-0123456789abcdef"
    assert config.log.level == "debug"


def test_interpolate_tree_handles_arrays_and_nested_tables() -> None:
    """Substitution reaches strings inside arrays and nested tables; other types pass through."""
    problems: list[tuple[str, str]] = []
    raw: dict[str, Any] = {
        "a": "${X}",
        "n": 5,
        "t": {"inner": {"deep": "${X}-${Y:-y}", "flag": True}, "list": ["${X}", 1, ["${Y:-z}"]]},
    }
    out = config_module._interpolate_tree(raw, "", {"X": "x"}, problems)
    assert problems == []
    assert out == {
        "a": "x",
        "n": 5,
        "t": {"inner": {"deep": "x-y", "flag": True}, "list": ["x", 1, ["z"]]},
    }


def test_unresolved_variables_reported_with_key_paths(tmp_path: Path) -> None:
    """Each unresolvable reference is a problem at its key path, arrays indexed."""
    text = BASE_CONFIG.replace(
        'listen = "127.0.0.1:8443"', 'listen = "${ADMIN_LISTEN:?set ADMIN_LISTEN}"'
    ).replace('level = "info"', 'level = "info"\nextra = ["ok", "${NOPE}"]')
    text = _edit(text, 'chain = "tls/ca.crt"', 'chain = "${CHAIN}"')
    problems = _problems(_instance(tmp_path, text))
    assert ("admin.listen", "set ADMIN_LISTEN") in problems
    assert ("tls.chain", "environment variable CHAIN is not set") in problems
    assert ("log.extra[1]", "environment variable NOPE is not set") in problems
    assert ("log.extra", "unknown key") in problems


def test_unresolved_variable_in_otherwise_valid_value_fails_load(tmp_path: Path) -> None:
    """An unresolved ``${VAR}`` stops the load even where the raw text would pass validation."""
    (tmp_path / "${NOT_SET}").mkdir()  # the literal text is an existing directory
    text = _edit(BASE_CONFIG, 'data_dir = "."', 'data_dir = "${NOT_SET}"')
    problems = _problems(_instance(tmp_path, text))
    assert problems == [("data_dir", "environment variable NOT_SET is not set")]


@pytest.mark.parametrize(
    ("old", "key"),
    [
        ('data_dir = "."', "data_dir"),
        ('listen = "127.0.0.1:8443"', "admin.listen"),
        ('certificate = "tls/server.crt"', "tls.certificate"),
        ('private_key = "file:tls/server.key"', "tls.private_key"),
        ('audit_signing_key = "file:secrets/audit-signing.key"', "secrets.audit_signing_key"),
        ('level = "info"', "log.level"),
    ],
)
def test_unresolved_variable_is_exactly_one_problem(tmp_path: Path, old: str, key: str) -> None:
    """A failed ``${VAR}`` is reported once, not again as "is required" or "file not found"."""
    name = old.split(" = ")[0]
    text = _edit(BASE_CONFIG, old, f'{name} = "${{UNSET_VAR}}"')
    assert _problems(_instance(tmp_path, text)) == [
        (key, "environment variable UNSET_VAR is not set")
    ]


# --- every problem at once ---------------------------------------------------------


def test_all_problems_reported_together(tmp_path: Path) -> None:
    """Three unrelated problems in one file come back as three problems, one per key."""
    text = _edit(BASE_CONFIG, 'listen = "127.0.0.1:8443"', 'listen = "localhost:8443"')
    text = _edit(text, 'certificate = "tls/server.crt"', 'certificate = "tls/missing.crt"')
    text = _edit(
        text,
        'audit_signing_key = "file:secrets/audit-signing.key"',
        'audit_signing_key = "file:secrets/missing.key"',
    )
    with pytest.raises(ConfigError) as caught:
        load(_instance(tmp_path, text), {})
    problems = caught.value.problems
    assert _keys(problems) == ["admin.listen", "tls.certificate", "secrets.audit_signing_key"]
    assert "IP address" in problems[0][1]
    assert "file not found" in problems[1][1]
    assert "file not found" in problems[2][1]
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("admin.listen: ")


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    """A misspelt key or unknown section is reported, never silently ignored."""
    text = _edit(BASE_CONFIG, 'listen = "127.0.0.1:8443"', 'lsten = "127.0.0.1:8443"')
    text += '\n[nonsense]\nlisten = "0.0.0.0:5061"\n'
    text = _edit(text, 'data_dir = "."', 'data_dir = "."\ndebug = true')
    problems = _problems(_instance(tmp_path, text))
    assert ("admin.lsten", "unknown key") in problems
    assert ("nonsense", "unknown key") in problems
    assert ("debug", "unknown key") in problems
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "checkpoint_every = 100",
            'checkpoint_every = "100"',
            "audit.checkpoint_every",
            "expected an integer, got str",
        ),
        (
            "checkpoint_every = 100",
            "checkpoint_every = true",
            "audit.checkpoint_every",
            "expected an integer, got bool",
        ),
        (
            "checkpoint_interval_seconds = 600",
            "checkpoint_interval_seconds = 600.0",
            "audit.checkpoint_interval_seconds",
            "expected an integer, got float",
        ),
        (
            'data_dir = "."',
            'data_dir = "."\nallow_unencrypted_storage = 1',
            "allow_unencrypted_storage",
            "expected true or false, got int",
        ),
        (
            'data_dir = "."',
            "data_dir = 7",
            "data_dir",
            "expected a path string, got int",
        ),
        (
            'listen = "127.0.0.1:8443"',
            "listen = 8443",
            "admin.listen",
            "expected a host:port string, got int",
        ),
        (
            'jwt_signing_key = "file:secrets/jwt-signing.key"',
            "jwt_signing_key = ['file:secrets/jwt-signing.key']",
            "secrets.jwt_signing_key",
            "expected a secret reference string, got list",
        ),
        (
            'certificate = "tls/server.crt"',
            "certificate = 1",
            "tls.certificate",
            "expected a path string, got int",
        ),
        (
            'audit_signing_key = "file:secrets/audit-signing.key"',
            "audit_signing_key = { file = 'x' }",
            "secrets.audit_signing_key",
            "expected a secret reference string, got dict",
        ),
        (
            'mode = "development"',
            'mode = "staging"',
            "mode",
            "must be one of development, production; got 'staging'",
        ),
        (
            'level = "info"',
            'level = "verbose"',
            "log.level",
            "must be one of debug, info, warn, error; got 'verbose'",
        ),
        (
            'format = "auto"',
            "format = false",
            "log.format",
            "expected a string, got bool",
        ),
        (
            '[admin]\nlisten = "127.0.0.1:8443"',
            'admin = "127.0.0.1:8443"',
            "admin",
            "expected a table, got str",
        ),
    ],
)
def test_wrong_types_and_values(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    """A wrong type (bool is not an int) or a value outside its choices is exactly one problem."""
    problems = _problems(_instance(tmp_path, _edit(BASE_CONFIG, old, new)))
    assert problems == [(key, message)]


@pytest.mark.parametrize(
    ("line", "key", "bad"),
    [
        ("checkpoint_every = 0", "audit.checkpoint_every", 0),
        ("checkpoint_every = -5", "audit.checkpoint_every", -5),
        ("checkpoint_every = 2147483649", "audit.checkpoint_every", 2147483649),
        ("checkpoint_interval_seconds = 9", "audit.checkpoint_interval_seconds", 9),
    ],
)
def test_out_of_range_integers(tmp_path: Path, line: str, key: str, bad: int) -> None:
    """Integers outside their range are reported with the range and the value."""
    name = line.split(" ")[0]
    text = BASE_CONFIG
    for current in ("checkpoint_every = 100", "checkpoint_interval_seconds = 600"):
        if current.startswith(name + " "):
            text = _edit(text, current, line)
    problems = _problems(_instance(tmp_path, text))
    assert len(problems) == 1
    assert problems[0][0] == key
    assert problems[0][1].startswith("must be between")
    assert problems[0][1].endswith(f"got {bad}")


def test_integer_range_bounds_are_inclusive(tmp_path: Path) -> None:
    """The smallest allowed values (1 and 10 seconds) load."""
    text = _edit(BASE_CONFIG, "checkpoint_every = 100", "checkpoint_every = 1")
    text = _edit(text, "checkpoint_interval_seconds = 600", "checkpoint_interval_seconds = 10")
    config = load(_instance(tmp_path, text), {})
    assert config.audit.checkpoint_every == 1
    assert config.audit.checkpoint_interval_seconds == 10


# --- listen addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8443", "127.0.0.1", 8443),
        ("192.0.2.1:1", "192.0.2.1", 1),
        ("[::1]:8443", "::1", 8443),
        ("[::]:65535", "::", 65535),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
    ],
)
def test_parse_listen_accepts(text: str, host: str, port: int) -> None:
    """IPv4 ``host:port`` and bracketed IPv6 ``[host]:port`` parse, and print back the same."""
    address = parse_listen(text)
    assert address == ListenAddress(host, port)
    assert str(address) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:", "expected host:port"),
        ("8443", "expected host:port"),
        ("127.0.0.1:http", "expected host:port"),
        ("127.0.0.1:-1", "expected host:port"),
        ("localhost:8443", "host must be an IP address"),
        ("example.com:443", "host must be an IP address"),
        (":8443", "host must be an IP address"),
        ("127.0.0.1:0", "port must be 1-65535, got 0"),
        ("127.0.0.1:70000", "port must be 1-65535, got 70000"),
        ("[::1]:0", "port must be 1-65535"),
        ("::1:8443", "IPv6 host in brackets"),
        ("2001:db8::1:443", "IPv6 host in brackets"),
    ],
)
def test_parse_listen_rejects(text: str, message: str) -> None:
    """Addresses without a port, with a hostname, an out-of-range port or bare IPv6 are refused."""
    with pytest.raises(ValueError, match=message):
        parse_listen(text)


@pytest.mark.parametrize("listen", ["127.0.0.1", "localhost:8443", "127.0.0.1:0", "[::1]:70000"])
def test_bad_listen_address_in_config(tmp_path: Path, listen: str) -> None:
    """A bad ``admin.listen`` is a problem at that key."""
    text = _edit(BASE_CONFIG, 'listen = "127.0.0.1:8443"', f'listen = "{listen}"')
    assert _keys(_problems(_instance(tmp_path, text))) == ["admin.listen"]


def test_ipv6_listen_in_config(tmp_path: Path) -> None:
    """A bracketed IPv6 ``admin.listen`` loads."""
    text = _edit(BASE_CONFIG, 'listen = "127.0.0.1:8443"', 'listen = "[::1]:9443"')
    config = load(_instance(tmp_path, text), {})
    assert config.admin.listen == ListenAddress("::1", 9443)


# --- unreadable files ------------------------------------------------------------


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A TOML syntax error is a ConfigError naming the file, not a traceback."""
    path = tmp_path / "bad.toml"
    path.write_text('mode = "development\n', encoding="utf-8")
    problems = _problems(path)
    assert len(problems) == 1
    assert problems[0][0] == str(path)
    assert problems[0][1].startswith("invalid TOML")


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError saying so."""
    path = tmp_path / "absent.toml"
    assert _problems(path) == [(str(path), "config file not found")]


def test_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'mode = "d\xe9veloppement"\n')
    problems = _problems(path)
    assert problems[0][1].startswith("cannot read config file")


def test_missing_files_named_by_the_config(tmp_path: Path) -> None:
    """A missing data_dir, certificate, chain or secret file is reported at its key."""
    config_path = _instance(tmp_path)
    for name in ("tls/server.crt", "tls/ca.crt", "tls/server.key", "secrets/jwt-signing.key"):
        (tmp_path / name).unlink()
    text = _edit(BASE_CONFIG, 'data_dir = "."', 'data_dir = "no-such-dir"')
    config_path.write_text(text, encoding="utf-8")
    problems = _problems(config_path)
    assert _keys(problems) == [
        "data_dir",
        "tls.certificate",
        "tls.private_key",
        "tls.chain",
        "secrets.jwt_signing_key",
    ]
    assert all("not found" in message for _, message in problems)


def test_production_refuses_secret_files_readable_by_others(tmp_path: Path) -> None:
    """In production every secret file must be owner-only; each offender is a problem."""
    path = _instance(tmp_path, PROD_CONFIG)
    (tmp_path / "tls" / "server.key").chmod(0o640)
    (tmp_path / "secrets" / "jwt-signing.key").chmod(0o644)
    problems = _problems(path)
    assert _keys(problems) == ["tls.private_key", "secrets.jwt_signing_key"]
    assert all("chmod 600" in message for _, message in problems)


def test_development_accepts_secret_files_readable_by_others(tmp_path: Path) -> None:
    """In development the 0600 rule does not apply."""
    path = _instance(tmp_path)
    (tmp_path / "secrets" / "jwt-signing.key").chmod(0o644)
    assert load(path, {}).secrets.jwt_signing_key.value == JWT_KEY


def test_inline_secret_refused_without_echoing_it(tmp_path: Path) -> None:
    """A secret written inline is refused, and the problem does not repeat it."""
    inline = "inline-literal-jwt-key-0123456789abcdef"
    text = _edit(
        BASE_CONFIG,
        'jwt_signing_key = "file:secrets/jwt-signing.key"',
        f'jwt_signing_key = "{inline}"',
    )
    with pytest.raises(ConfigError) as caught:
        load(_instance(tmp_path, text), {})
    assert _keys(caught.value.problems) == ["secrets.jwt_signing_key"]
    assert "must be a reference" in str(caught.value)
    assert inline not in str(caught.value)


# --- redacted summary ------------------------------------------------------------


def test_redacted_summary_never_contains_secret_values(tmp_path: Path) -> None:
    """``redacted_summary`` names every secret by reference and never includes its bytes."""
    jwt = "env-jwt-value-that-must-not-appear-0123456789"
    text = _edit(
        BASE_CONFIG,
        'jwt_signing_key = "file:secrets/jwt-signing.key"',
        'jwt_signing_key = "env:TELEMANCER_JWT"',
    )
    config = load(_instance(tmp_path, text), {"TELEMANCER_JWT": jwt})
    summary = "\n".join(redacted_summary(config))
    secrets = [
        config.tls.private_key.value,
        config.secrets.jwt_signing_key.value,
        config.secrets.audit_signing_key.value,
    ]
    assert config.secrets.jwt_signing_key.value == jwt.encode()
    for value in secrets:
        assert value.decode() not in summary
        # Not even one line of a PEM body.
        for line in value.decode().splitlines():
            if not line.startswith("-----"):
                assert line not in summary
    assert "secrets.jwt_signing_key: <secret env:TELEMANCER_JWT>" in summary
    assert "tls.private_key: <secret file:tls/server.key>" in summary
    assert "secrets.audit_signing_key: <secret file:secrets/audit-signing.key>" in summary


def test_redacted_summary_covers_every_key(tmp_path: Path) -> None:
    """The summary has one line per config key, section by section."""
    config = load(_instance(tmp_path), {})
    keys = [line.split(":", 1)[0] for line in redacted_summary(config)]
    assert keys == [
        "config",
        "mode",
        "data_dir",
        "allow_unencrypted_storage",
        "admin.listen",
        "tls.certificate",
        "tls.private_key",
        "tls.chain",
        "secrets.jwt_signing_key",
        "secrets.audit_signing_key",
        "audit.checkpoint_every",
        "audit.checkpoint_interval_seconds",
        "log.format",
        "log.level",
        "sip.tls_listen",
        "sip.plaintext_enabled",
        "sip.plaintext_listen",
        "sip.internal_subnets",
        "sip.failed_register_limit",
        "sip.failed_register_block_seconds",
        "sip.block_allowlist",
        "sip.min_expires",
        "sip.max_expires",
        "sip.max_contacts",
        "sip.max_connections_per_ip",
        "sip.idle_timeout_seconds",
        "sip.nonce_lifetime_seconds",
        "sip.digest_algorithms",
        "sip.advertised_host",
        "sip.max_call_seconds",
        "sip.dns_servers",
        "media.listen",
        "media.advertised_address",
        "media.port_min",
        "media.port_max",
        "media.idle_timeout",
    ]


def test_redacted_summary_of_dev_default_jwt_key(tmp_path: Path) -> None:
    """The development fallback key appears by its builtin reference, not its bytes."""
    text = _edit(BASE_CONFIG, 'jwt_signing_key = "file:secrets/jwt-signing.key"\n', "")
    summary = "\n".join(redacted_summary(load(_instance(tmp_path, text), {})))
    assert DEV_JWT_SIGNING_KEY.decode() not in summary
    assert f"<secret {DEV_JWT_REFERENCE}>" in summary


def test_sip_section_defaults_and_values(tmp_path: Path) -> None:
    """The dev [sip] section loads into typed values; absent keys take their defaults."""
    config = load(_instance(tmp_path), {})
    sip = config.sip
    assert str(sip.tls_listen) == "127.0.0.1:5061" and sip.plaintext_enabled is False
    assert [str(n) for n in sip.internal_subnets] == ["127.0.0.0/24"]
    assert (sip.failed_register_limit, sip.failed_register_block_seconds) == (5, 900)
    assert (sip.min_expires, sip.max_expires, sip.max_contacts) == (60, 3600, 10)


def test_plaintext_needs_internal_subnets(tmp_path: Path) -> None:
    """Enabling plaintext SIP with no internal subnet is refused, naming the key."""
    text = _edit(BASE_CONFIG, "plaintext_enabled = false", "plaintext_enabled = true")
    text = _edit(text, 'internal_subnets = ["127.0.0.0/24"]', "internal_subnets = []")
    assert _problems(_instance(tmp_path, text)) == [
        ("sip.internal_subnets", "plaintext_enabled needs at least one internal subnet")
    ]


def test_bad_cidrs_are_reported_by_index(tmp_path: Path) -> None:
    """Each malformed CIDR (or one with host bits) is reported under its list index."""
    text = _edit(
        BASE_CONFIG,
        'internal_subnets = ["127.0.0.0/24"]',
        'internal_subnets = ["10.0.0.0/8", "10.0.0.1/8", "nonsense"]',
    )
    keys = [key for key, _ in _problems(_instance(tmp_path, text))]
    assert keys == ["sip.internal_subnets[1]", "sip.internal_subnets[2]"]


def test_dns_servers_are_ip_port_pairs_and_bad_ones_reported_by_index(tmp_path: Path) -> None:
    """dns_servers defaults to none (the machine's resolv.conf); each entry must be
    IP:port, and a host name, a missing port or an unbracketed IPv6 is refused."""
    assert load(_instance(tmp_path / "default"), {}).sip.dns_servers == ()
    text = _edit(BASE_CONFIG, "[sip]\n", '[sip]\ndns_servers = ["127.0.0.53:53", "[::1]:5353"]\n')
    servers = load(_instance(tmp_path / "good", text), {}).sip.dns_servers
    assert [(s.host, s.port) for s in servers] == [("127.0.0.53", 53), ("::1", 5353)]
    bad = '[sip]\ndns_servers = ["127.0.0.53:53", "ns.example:53", "10.0.0.1", "::1:53"]\n'
    keys = [
        key
        for key, _ in _problems(_instance(tmp_path / "bad", _edit(BASE_CONFIG, "[sip]\n", bad)))
    ]
    assert keys == ["sip.dns_servers[1]", "sip.dns_servers[2]", "sip.dns_servers[3]"]


@pytest.mark.parametrize("value", [("MD5",), ("SHA-256",), ("MD5", "SHA-256")])
def test_digest_algorithms_accepted(tmp_path: Path, value: tuple[str, ...]) -> None:
    """digest_algorithms keeps the operator's choice and order."""
    listed = ", ".join(f'"{v}"' for v in value)
    text = _edit(BASE_CONFIG, "[sip]\n", f"[sip]\ndigest_algorithms = [{listed}]\n")
    assert load(_instance(tmp_path, text), {}).sip.digest_algorithms == value


@pytest.mark.parametrize("value", ["[]", '["SHA-1"]', '["MD5", "MD5"]', '"MD5"'])
def test_digest_algorithms_refused(tmp_path: Path, value: str) -> None:
    """An empty, unknown, repeated or non-list value is refused under its key."""
    text = _edit(BASE_CONFIG, "[sip]\n", f"[sip]\ndigest_algorithms = {value}\n")
    assert [key for key, _ in _problems(_instance(tmp_path, text))] == ["sip.digest_algorithms"]


def test_advertised_host(tmp_path: Path) -> None:
    """advertised_host names where phones reach the SIP listeners; without it a
    specific listen address is used, and a wildcard falls back to the host name."""
    config = load(_instance(tmp_path), {})
    assert config.sip.advertised(config.sip.tls_listen, "box") == "127.0.0.1"
    text = _edit(BASE_CONFIG, 'tls_listen = "127.0.0.1:5061"', 'tls_listen = "0.0.0.0:5061"')
    wildcard = load(_instance(tmp_path, text), {})
    assert wildcard.sip.advertised(wildcard.sip.tls_listen, "box") == "box"
    named = _edit(text, "[sip]\n", '[sip]\nadvertised_host = "pbx.example.net"\n')
    config = load(_instance(tmp_path, named), {})
    assert config.sip.advertised(config.sip.tls_listen, "box") == "pbx.example.net"
    bad = _edit(text, "[sip]\n", '[sip]\nadvertised_host = "not a host"\n')
    assert [k for k, _ in _problems(_instance(tmp_path, bad))] == ["sip.advertised_host"]
