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


def test_retention_defaults_are_the_contracts():
    s = load_settings({})
    assert (
        s.retention_events_days,
        s.retention_delivery_logs_days,
        s.retention_audit_days,
        s.retention_idempotency_hours,
    ) == (30, 30, 365, 24)
    day = 24 * 3600
    assert s.retention_seconds == {
        "events": 30 * day,
        "delivery_logs": 30 * day,
        "audit": 365 * day,
        "idempotency": 24 * 3600,
        "merge_tombstones": 30 * day,
    }


def test_retention_is_read_from_a_profile(tmp_path):
    (tmp_path / "default.toml").write_text("")
    (tmp_path / "short.toml").write_text(
        "[retention]\nevents_days = 7\ndelivery_logs_days = 4\naudit_days = 90\n"
        "idempotency_hours = 48\nmerge_tombstones_days = 10\n"
    )
    s = load_settings({"PB_CONFIG_DIR": str(tmp_path), "PB_CONFIG": "short"})
    assert s.retention_seconds == {
        "events": 7 * 86400,
        "delivery_logs": 4 * 86400,
        "audit": 90 * 86400,
        "idempotency": 48 * 3600,
        "merge_tombstones": 10 * 86400,
    }


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("events_days = 0", r"retention\.events_days must be 1-24855"),
        ("audit_days = 30000", r"retention\.audit_days must be 1-24855"),
        ("delivery_logs_days = -1", r"retention\.delivery_logs_days must be 1-24855"),
        ("idempotency_hours = 0", r"retention\.idempotency_hours must be 1-8784"),
        ('audit_days = "forever"', r"retention\.audit_days \(config\) must be a whole number"),
        ("events_days = 31.5", r"retention\.events_days \(config\) must be a whole number"),
        ("idempotency_hours = true", r"idempotency_hours \(config\) must be a whole number"),
        # Webhook deliveries are retried for 3 days: their events and records must outlive them.
        ("events_days = 2", r"retention\.events_days must cover webhooks\.retry_for_seconds"),
        ("delivery_logs_days = 1", r"delivery_logs_days must cover webhooks\.retry_for_seconds"),
    ],
)
def test_a_bad_retention_is_refused_naming_it(tmp_path, config, named):
    (tmp_path / "default.toml").write_text(f"[retention]\n{config}\n")
    with pytest.raises(SettingsError, match=named):
        load_settings({"PB_CONFIG_DIR": str(tmp_path)})


def test_a_shorter_retry_window_allows_a_shorter_retention(tmp_path):
    (tmp_path / "default.toml").write_text(
        "[webhooks]\nretry_for_seconds = 3600\n[retention]\nevents_days = 1\n"
        "delivery_logs_days = 1\n"
    )
    s = load_settings({"PB_CONFIG_DIR": str(tmp_path)})
    assert s.retention_seconds["events"] == s.retention_seconds["delivery_logs"] == 86400
