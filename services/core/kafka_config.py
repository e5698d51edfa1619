"""aiokafka client arguments from ``KafkaSettings``: addresses, SASL and TLS pass straight through.

>>> from selfimprove.core.settings import KafkaSettings
>>> from pydantic import SecretStr
>>> kw = client_kwargs(KafkaSettings(bootstrap_servers="k:9093", security_protocol="SASL_PLAINTEXT",
...                                  sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
...                                  sasl_password=SecretStr("p")))
>>> kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]
('SASL_PLAINTEXT', 'SCRAM-SHA-512', 'u', 'p')
"""

from __future__ import annotations

from typing import Any

from selfimprove.core.settings import KafkaSettings, SettingsError


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol.startswith("SASL"):
        if not (settings.sasl_mechanism and settings.sasl_username and settings.sasl_password):
            raise SettingsError(
                f"SELFIMPROVE_KAFKA_SECURITY_PROTOCOL={settings.security_protocol} needs "
                "SELFIMPROVE_KAFKA_SASL_MECHANISM, SELFIMPROVE_KAFKA_SASL_USERNAME and SELFIMPROVE_KAFKA_SASL_PASSWORD"
            )
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        cafile = str(settings.ssl_cafile) if settings.ssl_cafile else None
        kwargs["ssl_context"] = create_ssl_context(cafile=cafile)
    return kwargs
