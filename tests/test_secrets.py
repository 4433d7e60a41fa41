"""Secret references: file:, env: and credential:, and that values never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.secrets import Secret, SecretError, resolve_secret

VALUE = b"s3cret-value-that-must-never-print"


def _secret_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_file_relative_to_base_dir(tmp_path: Path) -> None:
    """``file:`` with a relative path reads the file under ``base_dir``, not the cwd."""
    path = _secret_file(tmp_path / "secrets" / "jwt.key", VALUE)
    secret = resolve_secret("file:secrets/jwt.key", tmp_path, {}, production=True)
    assert secret.value == VALUE
    assert secret.path == path
    assert secret.reference == "file:secrets/jwt.key"


def test_file_absolute_path(tmp_path: Path) -> None:
    """``file:`` with an absolute path ignores ``base_dir``."""
    path = _secret_file(tmp_path / "abs.key", VALUE)
    secret = resolve_secret(f"file:{path}", tmp_path / "elsewhere", {}, production=True)
    assert secret.value == VALUE


def test_file_one_trailing_newline_stripped(tmp_path: Path) -> None:
    """Exactly one trailing newline is stripped, so ``echo key > file`` works."""
    _secret_file(tmp_path / "one", VALUE + b"\n")
    _secret_file(tmp_path / "two", VALUE + b"\n\n")
    assert resolve_secret("file:one", tmp_path, {}, production=False).value == VALUE
    assert resolve_secret("file:two", tmp_path, {}, production=False).value == VALUE + b"\n"


def test_file_crlf_stripped(tmp_path: Path) -> None:
    """A trailing CRLF (a file saved on Windows) is stripped as one newline."""
    _secret_file(tmp_path / "crlf", VALUE + b"\r\n")
    assert resolve_secret("file:crlf", tmp_path, {}, production=False).value == VALUE


def test_file_without_newline_kept_whole(tmp_path: Path) -> None:
    """A file with no trailing newline is returned byte for byte."""
    _secret_file(tmp_path / "raw", b"\x00\xffbinary\r")
    assert resolve_secret("file:raw", tmp_path, {}, production=False).value == b"\x00\xffbinary\r"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A ``file:`` reference to a missing file fails with "file not found" and the path."""
    with pytest.raises(SecretError, match=r"file not found: .*nope\.key"):
        resolve_secret("file:nope.key", tmp_path, {}, production=False)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    """A ``file:`` reference to something unreadable (a directory) fails cleanly."""
    (tmp_path / "adir").mkdir()
    with pytest.raises(SecretError, match="cannot read"):
        resolve_secret("file:adir", tmp_path, {}, production=False)


def test_env_set(tmp_path: Path) -> None:
    """``env:NAME`` gives the variable's value as bytes, one trailing newline stripped."""
    secret = resolve_secret("env:JWT", tmp_path, {"JWT": "abc\n"}, production=True)
    assert secret.value == b"abc"
    assert secret.path is None


def test_env_missing(tmp_path: Path) -> None:
    """``env:NAME`` with the variable unset fails and names the variable."""
    with pytest.raises(SecretError, match="JWT is not set"):
        resolve_secret("env:JWT", tmp_path, {}, production=True)


def test_credential_with_credentials_directory(tmp_path: Path) -> None:
    """``credential:NAME`` reads ``$CREDENTIALS_DIRECTORY/NAME``."""
    creds = tmp_path / "creds"
    path = _secret_file(creds / "jwt", VALUE + b"\n", mode=0o400)
    environ = {"CREDENTIALS_DIRECTORY": str(creds)}
    secret = resolve_secret("credential:jwt", tmp_path, environ, production=True)
    assert secret.value == VALUE
    assert secret.path == path


def test_credential_without_credentials_directory(tmp_path: Path) -> None:
    """``credential:`` outside systemd (no CREDENTIALS_DIRECTORY) is an error saying so."""
    with pytest.raises(SecretError, match="CREDENTIALS_DIRECTORY is not set"):
        resolve_secret("credential:jwt", tmp_path, {}, production=True)


def test_credential_missing_file(tmp_path: Path) -> None:
    """A credential name that systemd did not provide is "file not found"."""
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(SecretError, match="file not found"):
        resolve_secret("credential:absent", tmp_path, environ, production=True)


@pytest.mark.parametrize("name", ["../etc/shadow", "sub/jwt", "/abs", ".."])
def test_credential_name_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    """A credential name with ``/`` (or ``..``) is refused before touching the filesystem."""
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(SecretError, match="must not contain '/'"):
        resolve_secret(f"credential:{name}", tmp_path, environ, production=False)


def test_unknown_scheme(tmp_path: Path) -> None:
    """A reference with an unknown scheme is refused, listing the known ones."""
    with pytest.raises(SecretError, match="unknown secret scheme") as caught:
        resolve_secret("vault:jwt", tmp_path, {}, production=False)
    assert "file:" in str(caught.value)


def test_unknown_scheme_error_does_not_echo_an_inline_secret(tmp_path: Path) -> None:
    """An inline secret that happens to contain ``:`` is not echoed into the error."""
    with pytest.raises(SecretError) as caught:
        resolve_secret("hunter2pass:word", tmp_path, {}, production=False)
    assert "hunter2pass" not in str(caught.value)
    assert "word" not in str(caught.value)


@pytest.mark.parametrize("reference", ["hunter2", "", "file:", "env:", "credential:"])
def test_literal_or_empty_reference_is_refused(tmp_path: Path, reference: str) -> None:
    """A value with no scheme (an inline secret) or no target is refused, not used."""
    with pytest.raises(SecretError, match="must be a reference") as caught:
        resolve_secret(reference, tmp_path, {}, production=False)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_group_or_other_accessible_file_refused_in_production(tmp_path: Path, mode: int) -> None:
    """In production a secret file accessible by group or other is refused with its mode."""
    _secret_file(tmp_path / "key", VALUE, mode=mode)
    with pytest.raises(SecretError, match=f"mode {mode:04o}.*chmod 600"):
        resolve_secret("file:key", tmp_path, {}, production=True)


@pytest.mark.parametrize("mode", [0o640, 0o644])
def test_group_or_other_accessible_file_allowed_in_development(tmp_path: Path, mode: int) -> None:
    """Outside production the permission rule does not apply."""
    _secret_file(tmp_path / "key", VALUE, mode=mode)
    assert resolve_secret("file:key", tmp_path, {}, production=False).value == VALUE


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_file_accepted_in_production(tmp_path: Path, mode: int) -> None:
    """Owner-only modes (0600, 0400) pass the production rule."""
    _secret_file(tmp_path / "key", VALUE, mode=mode)
    assert resolve_secret("file:key", tmp_path, {}, production=True).value == VALUE


def test_group_readable_credential_refused_in_production(tmp_path: Path) -> None:
    """The permission rule covers ``credential:`` files too, not only ``file:``."""
    _secret_file(tmp_path / "jwt", VALUE, mode=0o640)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(SecretError, match="group or other"):
        resolve_secret("credential:jwt", tmp_path, environ, production=True)


def test_repr_and_str_never_show_the_value(tmp_path: Path) -> None:
    """``repr()``, ``str()`` and f-strings of a Secret show the reference, never the value."""
    _secret_file(tmp_path / "key", VALUE)
    secret = resolve_secret("file:key", tmp_path, {}, production=True)
    text = VALUE.decode()
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert text not in shown
        assert repr(VALUE) not in shown
    assert str(secret) == "<secret file:key>"
    assert "file:key" in repr(secret)


def test_secret_error_messages_never_hold_the_value(tmp_path: Path) -> None:
    """Refusing a readable-by-others file names the path and mode, not the contents."""
    _secret_file(tmp_path / "key", VALUE, mode=0o644)
    with pytest.raises(SecretError) as caught:
        resolve_secret("file:key", tmp_path, {}, production=True)
    assert VALUE.decode() not in str(caught.value)


def test_secret_constructed_directly_hides_value() -> None:
    """The dataclass itself keeps ``value`` out of its repr."""
    secret = Secret("env:X", b"topsecret")
    assert "topsecret" not in repr(secret)
    assert "topsecret" not in str(secret)
