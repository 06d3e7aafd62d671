import pytest

from pollybot_leads.settings import SettingsError, load_settings


def test_environment_overrides_config():
    s = load_settings(
        {
            "MONGODB_URI": "mongodb://u:hunter2@db:27017",
            "REDIS_URL": "redis://:pw@cache:6379/0",
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "LOG_LEVEL": "debug",
        }
    )
    assert (s.host, s.port, s.log_level) == ("0.0.0.0", 9000, "DEBUG")
    assert not s.embedded
    assert "hunter2" not in repr(s) and ":pw@" not in repr(s)


def test_defaults_are_embedded_with_in_process_limits():
    s = load_settings({})
    assert s.embedded and s.redis_url == "" and s.key_cache_seconds <= 30
    assert s.max_body_bytes == 64 * 1024 and s.redis_timeout_ms <= 100


@pytest.mark.parametrize("env", [{"PORT": "x"}, {"PORT": "70000"}, {"MONGODB_DRIVER": "odbc"}])
def test_bad_values_are_refused(env):
    with pytest.raises(SettingsError):
        load_settings(env)
