"""Settings come from the environment; a bad value is named; secrets never print."""

import pytest

from selfimprove.core.kafka_config import client_kwargs
from selfimprove.core.settings import KafkaSettings, SettingsError, StoreSettings, load

pytestmark = pytest.mark.unit


def test_environment_first(monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("SELFIMPROVE_KAFKA_PARTITIONS", "8")
    kafka = load(KafkaSettings)
    assert kafka.partitions == 8
    assert client_kwargs(kafka)["bootstrap_servers"] == ["a:1", "b:2"]


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_KAFKA_PARTITIONS", "many")
    with pytest.raises(SettingsError, match=r"SELFIMPROVE_KAFKA_PARTITIONS \(got 'many'\)"):
        load(KafkaSettings)


def test_secret_values_are_not_echoed(monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_S3_SECRET_KEY", "hunter2-very-secret")
    monkeypatch.setenv("SELFIMPROVE_S3_BUCKET", "x")  # too short: triggers an error message
    with pytest.raises(SettingsError) as info:
        load(StoreSettings)
    assert "SELFIMPROVE_S3_BUCKET" in str(info.value)
    store = StoreSettings(bucket="okay")
    assert "hunter2" not in repr(store) and "hunter2" not in str(info.value)


def test_secret_from_mounted_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("SELFIMPROVE_S3_SECRET_KEY_FILE", str(secret))
    assert load(StoreSettings).secret_key.get_secret_value() == "from-file"
    monkeypatch.setenv("SELFIMPROVE_S3_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="SELFIMPROVE_S3_SECRET_KEY_FILE"):
        load(StoreSettings)


def test_sasl_and_tls_settings_reach_the_client(monkeypatch, tmp_path):
    import ssl

    monkeypatch.setenv("SELFIMPROVE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SELFIMPROVE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SELFIMPROVE_KAFKA_SASL_USERNAME", "loop")
    monkeypatch.setenv("SELFIMPROVE_KAFKA_SASL_PASSWORD", "pw")
    kwargs = client_kwargs(load(KafkaSettings))
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-256",
        "loop",
        "pw",
    )
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_sasl_without_credentials_is_refused(monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="SELFIMPROVE_KAFKA_SASL_USERNAME"):
        client_kwargs(load(KafkaSettings))


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("http://", "has a scheme"),
        ("ftp://x", "has a scheme"),
        ("https://minio:9000", "SELFIMPROVE_S3_SECURE=true"),
        ("localhost:notaport", "port 'notaport' is not a number"),
        ("minio:70000", "port '70000' is not a number"),
        ("minio:9000/bucket", "has a path"),
        ("", "bad host"),
    ],
)
def test_malformed_s3_endpoint_is_a_settings_error(monkeypatch, endpoint, words):
    monkeypatch.setenv("SELFIMPROVE_S3_ENDPOINT", endpoint)
    with pytest.raises(SettingsError) as info:
        load(StoreSettings)
    assert f"SELFIMPROVE_S3_ENDPOINT (got {endpoint!r})" in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:9000", "minio.example:9000", "minio_1:9000", "s3.local", "[::1]:9000"]
)
def test_good_s3_endpoints_pass(monkeypatch, endpoint):
    from minio import Minio

    monkeypatch.setenv("SELFIMPROVE_S3_ENDPOINT", endpoint)
    settings = load(StoreSettings)
    assert settings.endpoint == endpoint
    Minio(settings.endpoint, secure=False)  # the client takes every value the settings take


def test_a_setting_ending_in_file_is_not_a_secret_mount(monkeypatch, tmp_path):
    """``SELFIMPROVE_EVALUATOR_TLS_CERT_FILE`` is a path setting, not ``TLS_CERT`` read from a file."""
    from selfimprove.evaluator.settings import EvaluatorSettings

    monkeypatch.setenv("SELFIMPROVE_EVALUATOR_TLS_CERT_FILE", str(tmp_path / "not-yet.pem"))
    monkeypatch.setenv("SELFIMPROVE_EVALUATOR_TLS_KEY_FILE", str(tmp_path / "not-yet.key"))
    settings = load(EvaluatorSettings)
    assert settings.tls_cert_file == tmp_path / "not-yet.pem"


def test_fetch_wait_reaches_every_consumer(monkeypatch):
    from selfimprove.core.bus import Bus
    from selfimprove.core.consumer import Consumer
    from selfimprove.core.dedup import MemoryDedup

    assert KafkaSettings().fetch_max_wait_ms == 500  # an idle broker is not polled 20 times a second
    monkeypatch.setenv("SELFIMPROVE_KAFKA_FETCH_MAX_WAIT_MS", "1200")
    consumer = Consumer(Bus(load(KafkaSettings)), ["t"], "g", lambda env: None, MemoryDedup())
    assert consumer.client_options()["fetch_max_wait_ms"] == 1200
    monkeypatch.setenv("SELFIMPROVE_KAFKA_FETCH_MAX_WAIT_MS", "0")
    with pytest.raises(SettingsError, match="SELFIMPROVE_KAFKA_FETCH_MAX_WAIT_MS"):
        load(KafkaSettings)
