"""ezpz._redact: the one secret rule (docs/reliability.md), deep redaction, URL masking, opt-out."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections import namedtuple

import pytest

from ezpz._redact import (
    MAX_DEPTH,
    REDACTED,
    is_secret_key,
    mask_url,
    redact_config,
    secrets_allowed,
)

SECRET = [
    "api_key",
    "hf_token",
    "AWS_SECRET_ACCESS_KEY",
    "db_password",
    "apiKey",
    "HFToken",
    "clientSecret",
    "client-secret",
    "wandb.api.key",
    "credentials",
    "gcp_credential_file",
    "token",
    "access_token",
    "refresh-token",
    "private_key",
    "secret_key",
    "access_key",
    "MLFLOW_TRACKING_TOKEN",
    "passwd",
    "PASSWORD",
    "api_key_2",
]
NOT_SECRET = [
    "max_tokens",
    "tokenizer",
    "sort_key",
    "key",
    "token_budget",
    "tokens",
    "num_tokens",
    "keyword",
    "monkey",
    "passkey_len",
    "lr",
    "",
    "primary_key",
    "key_size",
]


@pytest.mark.parametrize("name", SECRET)
def test_secret_names(name):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", NOT_SECRET)
def test_not_secret_names(name):
    assert not is_secret_key(name)


def test_non_string_keys_are_fine():
    assert not is_secret_key(3)
    assert redact_config({3: "x", None: "y"}) == {3: "x", None: "y"}


def test_redact_any_depth_lists_and_tuples(monkeypatch):
    monkeypatch.delenv("EZPZ_LOG_SECRETS", raising=False)
    Point = namedtuple("Point", "x y")
    cfg = {
        "lr": 0.1,
        "max_tokens": 4096,
        "tokenizer": "gpt2",
        "wandb": {"api_key": "s3cr3t-1", "project": "demo"},
        "servers": [{"db_password": "s3cr3t-2"}, ({"nested": {"hf_token": "s3cr3t-3"}},)],
        "pt": Point(1, {"secret": "s3cr3t-4"}),
        "AWS_SECRET_ACCESS_KEY": {"whole": "s3cr3t-5"},
        "url": "postgres://alice:s3cr3t-6@db.example/x",
        "empty_token": None,
    }
    original = copy.deepcopy(cfg)
    out = redact_config(cfg)
    assert "s3cr3t" not in repr(out)
    assert out["wandb"] == {"api_key": REDACTED, "project": "demo"}
    assert out["servers"][0] == {"db_password": REDACTED}
    assert out["servers"][1] == ({"nested": {"hf_token": REDACTED}},)
    assert isinstance(out["pt"], Point) and out["pt"].y == {"secret": REDACTED}
    assert out["AWS_SECRET_ACCESS_KEY"] == REDACTED
    assert out["url"] == "postgres://***@db.example/x"
    assert out["empty_token"] is None  # "not set" is no secret
    assert (out["lr"], out["max_tokens"], out["tokenizer"]) == (0.1, 4096, "gpt2")
    # a deep copy: the caller's config is untouched
    assert cfg == original
    assert out["wandb"] is not cfg["wandb"]


def test_self_reference_and_depth_never_raise(monkeypatch):
    monkeypatch.delenv("EZPZ_LOG_SECRETS", raising=False)
    loop: dict = {"a": 1, "api_key": "s3cr3t"}
    loop["self"] = loop
    out = redact_config(loop)
    assert out["api_key"] == REDACTED and isinstance(out["self"], str)
    deep: dict = {"token": "s3cr3t"}
    for _ in range(5000):
        deep = {"d": deep}
    out = redact_config(deep)  # no RecursionError
    for _ in range(MAX_DEPTH):
        out = out["d"]
    assert isinstance(out, str) and "s3cr3t" not in out
    shared = {"x": 1}
    assert redact_config({"a": shared, "b": shared}) == {"a": {"x": 1}, "b": {"x": 1}}


def test_opt_out(monkeypatch):
    cfg = {"api_key": "visible", "u": "http://a:b@h/"}
    monkeypatch.setenv("EZPZ_LOG_SECRETS", "1")
    assert secrets_allowed()
    out = redact_config(cfg)
    assert out == cfg and out is not cfg
    assert redact_config(cfg, force=True)["api_key"] == REDACTED
    monkeypatch.setenv("EZPZ_LOG_SECRETS", "0")
    assert not secrets_allowed()
    assert redact_config(cfg)["api_key"] == REDACTED


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:pass@host:5000/", "http://***@host:5000/"),
        ("https://tok@mlflow.example/x", "https://***@mlflow.example/x"),
        (
            "failed: http://u:p@a/ and postgres://v:q@b/db",
            "failed: http://***@a/ and postgres://***@b/db",
        ),
        ("http://host:5000/path@x", "http://host:5000/path@x"),  # '@' after the path is no userinfo
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("no url here", "no url here"),
    ],
)
def test_mask_url(text, masked):
    assert mask_url(text) == masked


def test_import_is_light():
    code = "import sys, ezpz._redact; print(sorted(m for m in ('numpy','torch','h5py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_redact_text_masks_urls_and_secret_env_values():
    from ezpz._redact import redact_text

    env = {
        "MLFLOW_TRACKING_URI": "http://alice:pw-S3CRET@host:5000/",
        "HF_TOKEN": "hf_S3CRETVALUE",
        "WANDB_DISABLE_TOKEN": "true",  # a flag word is no secret
        "PATH": "/usr/bin",
    }
    text = (
        "cannot reach http://alice:pw-S3CRET@host:5000/ (401 for pw-S3CRET); "
        "token hf_S3CRETVALUE; cache true; /usr/bin"
    )
    out = redact_text(text, env)
    assert "S3CRET" not in out
    assert out.startswith("cannot reach http://***@host:5000/ (401 for ***)")
    assert "cache true; /usr/bin" in out


def test_log_filter_masks_messages_and_tracebacks(monkeypatch, caplog):
    import logging

    from ezpz._redact import protect_logger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:pw-S3CRET@h/")
    log = protect_logger(logging.getLogger("ezpz.test.redact"))
    protect_logger(log)  # idempotent
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="ezpz.test.redact"):
        try:
            raise ConnectionError("API request to http://bob:pw-S3CRET@h/api failed")
        except ConnectionError as exc:
            log.warning("cannot reach %s: %s", "http://bob:pw-S3CRET@h/", exc, exc_info=True)
    record = caplog.records[-1]
    assert "S3CRET" not in record.getMessage()
    assert "S3CRET" not in caplog.text  # the formatted traceback too
    assert "http://***@h/api" in caplog.text


def test_dataclass_and_namespace_configs_are_redacted(monkeypatch):
    import argparse
    import dataclasses

    monkeypatch.delenv("EZPZ_LOG_SECRETS", raising=False)

    @dataclasses.dataclass
    class Opt:
        lr: float = 0.1
        api_key: str = "s3cr3t-dc"

    args = argparse.Namespace(hf_token="s3cr3t-ns", max_tokens=5, opt=Opt())
    out = redact_config({"args": args, "opt": Opt()})
    assert "s3cr3t" not in repr(out)
    assert out["args"] == {
        "hf_token": REDACTED,
        "max_tokens": 5,
        "opt": {"lr": 0.1, "api_key": REDACTED},
    }
    assert args.hf_token == "s3cr3t-ns"  # the caller's object is untouched
