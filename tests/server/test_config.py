"""Configuration from the environment: the deadlines, bounds and budgets, and their errors."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.e2e.servers import DEMO_MERCHANT_KEY
from zeropay_server.__main__ import main
from zeropay_server.config import ConfigError, load_settings

PRODUCTION = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1/zeropay",
    "ZEROPAY_MASTER_KEYS": "1:" + "A" * 43 + "=",
    "ZEROPAY_PEPPER": "B" * 43 + "=",
    "ZEROPAY_RECEIPT_SIGNING_KEY": "C" * 43 + "=",
}


def test_each_server_process_gets_its_share_of_the_cores_for_crypto() -> None:
    cores = os.cpu_count() or 1
    assert load_settings({}).crypto_workers == cores
    two = load_settings({**PRODUCTION, "ZEROPAY_WORKERS": "2"})
    assert two.crypto_workers == max(1, cores // 2)
    many = load_settings({**PRODUCTION, "ZEROPAY_WORKERS": str(4 * cores)})
    assert many.crypto_workers == 1
    assert load_settings({"CRYPTO_WORKERS": "3"}).crypto_workers == 3


def test_the_role_bounds_the_audit_flushers_to_one_per_instance() -> None:
    default = load_settings({**PRODUCTION, "ZEROPAY_WORKERS": "3"})
    assert default.role == "all"
    assert default.serves_api
    assert [default.flushes_audit(n) for n in range(3)] == [True, False, False]
    api = load_settings({**PRODUCTION, "ZEROPAY_ROLE": "api", "ZEROPAY_WORKERS": "2"})
    assert api.serves_api
    assert not any(api.flushes_audit(n) for n in range(2))
    audit = load_settings({**PRODUCTION, "ZEROPAY_ROLE": "audit"})
    assert not audit.serves_api
    assert audit.flushes_audit(0)
    assert load_settings({}).flushes_audit(0)  # the embedded default does everything


def test_dependency_deadlines_and_connection_bounds_come_from_the_environment() -> None:
    defaults = load_settings({})
    assert (defaults.redis_timeout, defaults.db_timeout) == (1.0, 1.0)
    settings = load_settings(
        {
            "REDIS_TIMEOUT_MS": "250",
            "DB_TIMEOUT_MS": "1500",
            "HTTP_KEEP_ALIVE_TIMEOUT": "30",
            "HTTP_READ_TIMEOUT": "5",
            "HTTP_MAX_CONNECTIONS": "64",
            "RATE_LIMIT_PER_MERCHANT": "10",
            "MERCHANT_FAILURES_PER_HOUR": "15",
            "AUDIT_RECLAIM_IDLE_MS": "2000",
            "LOCKOUT_DURATIONS": "60, 600",
        }
    )
    assert (settings.redis_timeout, settings.db_timeout) == (0.25, 1.5)
    assert (settings.keep_alive_timeout, settings.read_timeout) == (30, 5)
    assert settings.max_connections == 64
    assert (settings.rate_limit_per_merchant, settings.merchant_failures_per_hour) == (10, 15)
    # The replaced lock cap is read for one release, as that many accounts' five failures.
    assert load_settings({"MERCHANT_LOCKS_PER_HOUR": "3"}).merchant_failures_per_hour == 15
    assert load_settings({"MERCHANT_LOCKS_PER_HOUR": "0"}).merchant_failures_per_hour == 0
    assert settings.audit_reclaim_idle_ms == 2000
    assert (defaults.lockout_durations, settings.lockout_durations) == (
        (900, 3600, 14400, 86400),
        (60, 600),
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_TIMEOUT_MS": "0"}, "REDIS_TIMEOUT_MS"),
        ({"HTTP_MAX_CONNECTIONS": "many"}, "HTTP_MAX_CONNECTIONS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"ZEROPAY_DEMO_MERCHANT_KEY": "not-a-key"}, "ZEROPAY_DEMO_MERCHANT_KEY"),
        ({**PRODUCTION, "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY}, "embedded default only"),
        ({**PRODUCTION, "ZEROPAY_ROLE": "flusher"}, "ZEROPAY_ROLE"),
        ({"ZEROPAY_ROLE": "api"}, "needs Redis and PostgreSQL"),
        ({"LOCKOUT_DURATIONS": "60,soon"}, "LOCKOUT_DURATIONS"),
        ({"LOCKOUT_DURATIONS": "60,0"}, "LOCKOUT_DURATIONS"),
        ({**PRODUCTION, "ZEROPAY_ROLE": "audit", "ZEROPAY_WORKERS": "2"}, "ZEROPAY_WORKERS"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_the_demo_merchant_key_is_taken_as_given_in_the_embedded_default() -> None:
    assert load_settings({"ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY}).demo_merchant_key == (
        DEMO_MERCHANT_KEY
    )
    assert load_settings({"LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_command_line_flags_win_without_touching_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zeropay_server import __main__ as cli
    from zeropay_server import serve

    started: list[Any] = []
    monkeypatch.setattr(serve, "run", lambda settings, env: started.append((settings, env)))
    monkeypatch.setenv("ZEROPAY_BIND", "127.0.0.1:1111")
    before = dict(os.environ)
    assert cli.main(["--bind", "127.0.0.1:2222"]) == 0
    ((settings, env),) = started
    assert settings.bind == "127.0.0.1:2222"
    assert env["ZEROPAY_BIND"] == "127.0.0.1:2222"  # what worker processes read
    assert dict(os.environ) == before


def test_a_bad_flag_value_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    from zeropay_server import __main__ as cli

    assert cli.main(["--workers", "0"]) == 2
    assert "ZEROPAY_WORKERS" in capsys.readouterr().err


def test_passkeys_default_to_localhost_embedded_and_are_off_elsewhere_until_configured() -> None:
    embedded = load_settings({"ZEROPAY_BIND": "127.0.0.1:9000"}).relying_party
    assert embedded is not None
    assert (embedded.rp_id, embedded.origins) == ("localhost", ("http://localhost:9000",))
    assert load_settings(PRODUCTION).relying_party is None
    configured = load_settings(
        {
            **PRODUCTION,
            "WEBAUTHN_RP_ID": "pay.example",
            "WEBAUTHN_ORIGINS": "https://pay.example, https://checkout.pay.example",
        }
    ).relying_party
    assert configured is not None
    assert configured.origins == ("https://pay.example", "https://checkout.pay.example")
    default_origin = load_settings({**PRODUCTION, "WEBAUTHN_RP_ID": "pay.example"}).relying_party
    assert default_origin is not None
    assert default_origin.origins == ("https://pay.example",)
    for origins in ("https://evil.example", "ftp://pay.example", "https://notpay.example"):
        with pytest.raises(ConfigError, match="WEBAUTHN_ORIGINS"):
            load_settings(
                {**PRODUCTION, "WEBAUTHN_RP_ID": "pay.example", "WEBAUTHN_ORIGINS": origins}
            )


def test_every_problem_is_named_not_only_the_first() -> None:
    broken = {
        **PRODUCTION,
        "ZEROPAY_WORKERS": "many",
        "LOG_LEVEL": "LOUD",
        "ZEROPAY_PEPPER": "c2hvcnQ=",  # 5 bytes
        "ZEROPAY_RECEIPT_SIGNING_KEY": "not base64!",
        "HTTP_READ_TIMEOUT": "0",
        "ZEROPAY_RECEIPT_RETIRED_KEYS": "old:" + "A" * 43 + ":2027-03-01",  # no time zone
    }
    with pytest.raises(ConfigError) as refused:
        load_settings(broken)
    named = "\n".join(refused.value.problems)
    for variable in (
        "ZEROPAY_WORKERS",
        "LOG_LEVEL",
        "ZEROPAY_PEPPER",
        "ZEROPAY_RECEIPT_SIGNING_KEY",
        "HTTP_READ_TIMEOUT",
        "ZEROPAY_RECEIPT_RETIRED_KEYS",
    ):
        assert variable in named
    assert len(refused.value.problems) == 6


def test_check_config_prints_the_effective_configuration_with_secrets_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        **PRODUCTION,
        "REDIS_URL": "redis://:redis-secret@127.0.0.1:6379/0",
        "DATABASE_URL": "postgresql://zeropay:db-secret@127.0.0.1:6432/zeropay",
        "ZEROPAY_MASTER_KEYS": "1:" + "A" * 43 + "=,2:" + "D" * 43 + "=",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    for secret in ("redis-secret", "db-secret", "A" * 43, "B" * 43, "C" * 43, "D" * 43):
        assert secret not in out
    assert shown["secrets"]["master_key_versions"] == [1, 2]
    assert shown["secrets"]["master_key_current"] == 2
    assert shown["database_url"] == "postgresql://zeropay:<redacted>@127.0.0.1:6432/zeropay"
    assert shown["redis_url"] == "redis://:<redacted>@127.0.0.1:6379/0"
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("DB_POOL_SIZE", "-1")
    assert main(["check-config"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert [e.split(": ")[2].split()[0] for e in errors] == ["DB_POOL_SIZE", "LOG_LEVEL"]


def test_each_command_has_its_own_help_and_there_is_a_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command, own, foreign in (
        ("rotate-keys", "--batch", "--since"),
        ("webhooks", "--since", "--batch"),
        ("serve", "--workers", "--lb-port"),
    ):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        shown = capsys.readouterr().out
        assert own in shown, command
        assert foreign not in shown, command
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("zeropay-server ")


def test_a_wrong_digest_answer_lists_the_factors_and_the_palettes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = "0b6f7d2e-57c1-4f7e-9a59-2f1d8f0c6a11"
    assert main(["digest", user, "COLOUR", "purple"]) == 2
    told = capsys.readouterr().err
    assert "teal" in told
    assert "PIN, COLOUR" in told
    assert main(["digest", user, "COLOR", "teal"]) == 2
    assert "no factor 'COLOR'" in capsys.readouterr().err
    assert main(["digest", user, "COLOUR", "teal,amber"]) == 0
    assert len(capsys.readouterr().out.strip()) == 64
