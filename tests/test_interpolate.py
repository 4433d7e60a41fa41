"""``${VAR}`` substitution: the exact grammar, and that nothing is left unresolved."""

from __future__ import annotations

import pytest

from appliance.interpolate import InterpolationError, interpolate


def test_plain_text_is_unchanged() -> None:
    """A value without any ``$`` comes back as it went in."""
    assert interpolate("tls/server.crt", {}) == "tls/server.crt"


def test_set_variable_is_substituted() -> None:
    """``${NAME}`` is replaced by the variable's value."""
    assert interpolate("${HOST}:8443", {"HOST": "127.0.0.1"}) == "127.0.0.1:8443"


def test_variable_set_to_empty_is_substituted_as_empty() -> None:
    """``${NAME}`` accepts a variable that is set but empty."""
    assert interpolate("a${EMPTY}b", {"EMPTY": ""}) == "ab"


def test_missing_variable_is_an_error_naming_it() -> None:
    """``${NAME}`` with the variable unset raises, and the message names the variable."""
    with pytest.raises(InterpolationError, match="MISSING is not set"):
        interpolate("${MISSING}", {})


def test_default_used_when_unset() -> None:
    """``${NAME:-default}`` gives the default when the variable is unset."""
    assert interpolate("${PORT:-8443}", {}) == "8443"


def test_default_used_when_empty() -> None:
    """``${NAME:-default}`` gives the default when the variable is set but empty."""
    assert interpolate("${PORT:-8443}", {"PORT": ""}) == "8443"


def test_default_ignored_when_set() -> None:
    """``${NAME:-default}`` gives the variable's value when it is set and non-empty."""
    assert interpolate("${PORT:-8443}", {"PORT": "9443"}) == "9443"


def test_empty_default() -> None:
    """``${NAME:-}`` resolves to the empty string when the variable is unset."""
    assert interpolate("x${NAME:-}y", {}) == "xy"


def test_required_unset_raises_with_message() -> None:
    """``${NAME:?message}`` with the variable unset raises with exactly that message."""
    with pytest.raises(InterpolationError) as caught:
        interpolate("${KEY:?set KEY to the key file}", {})
    assert str(caught.value) == "set KEY to the key file"


def test_required_empty_raises() -> None:
    """``${NAME:?message}`` with the variable set but empty raises too."""
    with pytest.raises(InterpolationError, match="need KEY"):
        interpolate("${KEY:?need KEY}", {"KEY": ""})


def test_required_set_gives_value() -> None:
    """``${NAME:?message}`` with the variable set gives its value."""
    assert interpolate("${KEY:?need KEY}", {"KEY": "file:k"}) == "file:k"


def test_required_with_empty_message_uses_generic_message() -> None:
    """``${NAME:?}`` still raises when unset, with a message naming the variable."""
    with pytest.raises(InterpolationError, match="KEY is not set or empty"):
        interpolate("${KEY:?}", {})


def test_double_dollar_is_a_literal_dollar() -> None:
    """``$$`` becomes one ``$`` and is not the start of a reference."""
    assert interpolate("cost $$5 and $${NOT}", {}) == "cost $5 and ${NOT}"


@pytest.mark.parametrize(
    "value",
    ["$", "price: 5$", "$VAR", "${", "${VAR", "${1BAD}", "${}", "${A-B}", "${A:x}"],
)
def test_malformed_references_are_errors(value: str) -> None:
    """Any ``$`` that is not ``$$`` or a complete ``${...}`` reference is an error."""
    with pytest.raises(InterpolationError, match="malformed reference"):
        interpolate(value, {"VAR": "v", "A": "a", "1BAD": "x"})


def test_several_references_in_one_string() -> None:
    """Every reference in a string is resolved, each by its own rule."""
    environ = {"USER": "ops", "EMPTY": ""}
    value = "${USER}@${HOST:-localhost}:${EMPTY:-22}/$$HOME/${USER}"
    assert interpolate(value, environ) == "ops@localhost:22/$HOME/ops"


def test_error_in_later_reference_is_reported() -> None:
    """A bad reference after good ones still raises; nothing is half-resolved silently."""
    with pytest.raises(InterpolationError, match="LATER"):
        interpolate("${A}-${LATER}", {"A": "a"})


@pytest.mark.parametrize(
    "value",
    ["${A:-${B}}", "${A:-x${B}", "${A:?${B}}", "${A:-$}", "${A:-$$}"],
)
def test_default_cannot_smuggle_a_reference(value: str) -> None:
    """A ``$`` inside a default or message is an error, so ``${`` never reaches the output."""
    with pytest.raises(InterpolationError):
        interpolate(value, {})


@pytest.mark.parametrize(
    "value", ["${A}", "${A:-d}", "${B:-x}", "${A:?m}", "${B:-}", "${A}${A}", "{${A}}", "${A}}"]
)
def test_output_never_contains_an_unresolved_reference(value: str) -> None:
    """A resolved value holds no ``$`` at all unless ``$$`` or the environment put it there."""
    assert "$" not in interpolate(value, {"A": "a"})
