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


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "abc"}, "PORT must be an integer, not 'abc'"),
        ({"PB_EMBEDDED_PORT": "1.5"}, "PB_EMBEDDED_PORT must be an integer"),
        ({"MONGODB_TIMEOUT_MS": "fast"}, "MONGODB_TIMEOUT_MS must be an integer"),
        ({"MONGODB_JOURNAL": "maybe"}, "MONGODB_JOURNAL must be true or false"),
        ({"RATELIMIT_ENABLED": "perhaps"}, "RATELIMIT_ENABLED must be true or false"),
        ({"MONGODB_W": "most"}, "MONGODB_W"),
        ({"MONGODB_DRIVER": "odbc"}, "MONGODB_DRIVER"),
        ({"PORT": "0"}, "PORT"),
    ],
)
def test_a_bad_environment_value_names_its_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_a_bad_config_value_names_its_key(tmp_path):
    (tmp_path / "default.toml").write_text('[ratelimit]\ncapacity = "lots"\n')
    with pytest.raises(SettingsError, match=r"ratelimit\.capacity \(config\) must be an integer"):
        load_settings({"PB_CONFIG_DIR": str(tmp_path)})


def test_motor_without_its_extra_installed_says_how_to_get_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(  # as on an install without the [motor] extra
        importlib.util, "find_spec", lambda name, *a: None if name == "motor" else real(name, *a)
    )
    with pytest.raises(SettingsError, match=r"pip install 'pollybot-leads\[motor\]'"):
        load_settings({"MONGODB_DRIVER": "motor"})
    assert load_settings({}).mongodb_driver == "pymongo"
