"""What may be a client key: values a client could really send as a Bearer token."""

from __future__ import annotations

import pytest

from tiergate_contract import client_key_problem


@pytest.mark.parametrize(
    "value", ["tg-startup-fake-key-0001", "sk-proj-AbC_123.xyz~+/=", "a" * 512]
)
def test_a_visible_ascii_token_is_a_key(value: str) -> None:
    assert client_key_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("   ", "is only whitespace"),
        ("\n", "is only whitespace"),
        ("tg-key\n", "ends with a newline"),
        ("tg-key\r\n", "ends with a newline"),
        (" tg-key", "starts or ends with whitespace"),
        ("tg-key\t", "starts or ends with whitespace"),
        ("tg key", "holds a character other than visible ASCII"),
        ("tg-k\x00ey", "holds a character other than visible ASCII"),
        ("tg-kéy", "holds a character other than visible ASCII"),
    ],
)
def test_a_value_no_client_could_send_is_refused_with_the_reason(value: str, problem: str) -> None:
    found = client_key_problem(value)
    assert found is not None and found.startswith(problem)
    assert value.strip() == "" or value.strip() not in found, "the message must not echo the value"
