import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ops.settings import DEV_JWT_SECRET, JWT_PLACEHOLDER, Settings, SettingsError


def load(**env: str) -> Settings:
    return Settings.load(environ=env, env_file=None)


def test_defaults_are_a_development_setup() -> None:
    settings = load()
    assert settings.app_env == "development"
    assert settings.port == 8000
    assert settings.database_url is None and settings.redis_url is None
    assert (settings.cache_ttl_overview, settings.cache_ttl_trends,
            settings.cache_ttl_productivity) == (300, 900, 600)
    assert settings.aggregation_schedule == "0 1 * * *"
    assert settings.enable_query_cache is True


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "abc"), ("PORT", "70000"), ("APP_ENV", "prod"), ("WORKERS", "0"),
    ("CORS_CREDENTIALS", "maybe"), ("CACHE_TTL_OVERVIEW", "5 minutes"), ("LOG_FORMAT", "xml"),
    ("DATABASE_POOL_TIMEOUT", "-1"), ("LOG_MAX_SIZE", "big"),
])
def test_a_bad_value_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load(**{name: value})
    message = str(excinfo.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


@pytest.mark.parametrize("secret", [JWT_PLACEHOLDER, DEV_JWT_SECRET, "short-secret"])
def test_production_refuses_a_placeholder_or_short_secret(secret: str) -> None:
    with pytest.raises(SettingsError, match="^JWT_SECRET_KEY: "):
        load(APP_ENV="production", JWT_SECRET_KEY=secret)


def test_production_refuses_app_debug() -> None:
    with pytest.raises(SettingsError, match="^APP_DEBUG: "):
        load(APP_ENV="production", JWT_SECRET_KEY="x" * 40, APP_DEBUG="true")
    assert load(APP_ENV="staging", APP_DEBUG="true").app_debug


def test_production_accepts_a_long_random_secret() -> None:
    settings = load(APP_ENV="production", JWT_SECRET_KEY="x" * 40)
    assert settings.is_production


def test_env_file_with_quotes_and_comments(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        '# a comment\n'
        'AGGREGATION_SCHEDULE="0 1 * * *"  # 1 AM daily\n'
        "CACHE_TTL_TRENDS=900  # 15 minutes\n"
        "export CORS_ORIGINS=https://a.example,https://b.example\n"
        "LOG_MAX_SIZE=100MB\n"
        "PORT=9000\n")
    settings = Settings.load(environ={"PORT": "9100"}, env_file=env_file)
    assert settings.aggregation_schedule == "0 1 * * *"
    assert settings.cache_ttl_trends == 900
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.log_max_size == 100 * 1024 * 1024
    assert settings.port == 9100, "the environment wins over the file"


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("s" * 48 + "\n")
    settings = load(APP_ENV="production", JWT_SECRET_KEY_FILE=str(secret))
    assert settings.jwt_secret_key == "s" * 48
    with pytest.raises(SettingsError, match="^JWT_SECRET_KEY_FILE: cannot read"):
        load(JWT_SECRET_KEY_FILE=str(tmp_path / "missing"))


def test_example_env_file_lists_every_setting() -> None:
    from gateway.ops.settings import documented_settings, read_env_file

    example = read_env_file(Path(__file__).parent.parent / ".env.example")
    missing = [name for name, _, _ in documented_settings() if name not in example]
    assert missing == []


def test_cli_stops_with_one_line_naming_the_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "migrate"],
                            env={"PORT": "eighty", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: PORT: expected a whole number, got 'eighty'"]


def test_readme_configuration_table_names_every_setting() -> None:
    from gateway.ops.settings import documented_settings

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert [name for name, _, _ in documented_settings() if f"`{name}`" not in readme] == []
