"""ezpz._env: one parser and one warning style for every environment variable."""

from __future__ import annotations

import logging

import pytest

from ezpz._env import FALSY, TRUTHY, env_flag, env_float, env_int, env_str

NAME = "EZPZ_TEST_ENV_VALUE"


@pytest.fixture
def setenv(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)

    def _set(value: str) -> None:
        monkeypatch.setenv(NAME, value)

    return _set


def test_unset_and_blank_give_the_default(setenv):
    assert env_flag(NAME) is False and env_flag(NAME, True) is True
    assert env_int(NAME, 5) == 5 and env_int(NAME, None) is None
    assert env_float(NAME, 2.5) == 2.5 and env_str(NAME) is None
    setenv("   ")
    assert env_flag(NAME, True) is True
    assert env_int(NAME, 5) == 5 and env_float(NAME, 2.5) == 2.5
    assert env_str(NAME, "d") == "d"


@pytest.mark.parametrize("raw", sorted(TRUTHY) + [" TRUE ", "Yes", "ON"])
def test_truthy_strings(setenv, raw):
    setenv(raw)
    assert env_flag(NAME) is True


@pytest.mark.parametrize("raw", sorted(FALSY) + [" False ", "NO", "Off"])
def test_falsy_strings(setenv, raw):
    setenv(raw)
    assert env_flag(NAME, True) is False


def test_values_parse(setenv):
    setenv(" 12 ")
    assert env_int(NAME, 1) == 12 and env_float(NAME, 1.0) == 12.0
    assert env_str(NAME) == "12"
    setenv("0.25")
    assert env_float(NAME, 1.0, minimum=0) == 0.25


@pytest.mark.parametrize(
    ("reader", "raw", "default"),
    [
        (lambda: env_flag(NAME, True), "maybe", True),
        (lambda: env_int(NAME, 7), "ten", 7),
        (lambda: env_int(NAME, 7), "1.5", 7),
        (lambda: env_int(NAME, 7, minimum=1), "0", 7),
        (lambda: env_int(NAME, None, minimum=0), "-3", None),
        (lambda: env_float(NAME, 2.0), "soon", 2.0),
        (lambda: env_float(NAME, 2.0), "nan", 2.0),
        (lambda: env_float(NAME, 2.0), "inf", 2.0),
        (lambda: env_float(NAME, 2.0, minimum=0.0), "-1", 2.0),
    ],
)
def test_bad_values_warn_in_one_style_and_give_the_default(setenv, caplog, reader, raw, default):
    setenv(raw)
    with caplog.at_level(logging.WARNING, logger="ezpz._env"):
        assert reader() == default
    [record] = [r for r in caplog.records if r.name == "ezpz._env"]
    message = record.getMessage()
    assert message.startswith(f"{NAME}={raw!r} is not ")
    assert message.endswith(f"; using {default}")


def test_explicit_mapping_replaces_os_environ(setenv):
    setenv("0")
    assert env_flag(NAME, env={NAME: "yes"}) is True
    assert env_int(NAME, 1, env={}) == 1
    assert env_str(NAME, env={NAME: " x "}) == "x"
