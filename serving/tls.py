"""TLS: TF Serving's ``--ssl_config_file`` (a text-proto ``SSLConfig``) and the gRPC credentials it makes.

``SSLConfig`` fields hold PEM text (server key, certificate chain, optional CA); ``client_verify``
requires client certificates signed by ``custom_ca`` (mutual TLS). :func:`is_loopback` tells whether
a plaintext port is reachable only from this machine.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format


def _ssl_config_class() -> type:
    """``tensorflow.serving.SSLConfig`` (``tensorflow_serving/config/ssl_config.proto``).

    ``tensorflow-serving-api`` does not ship ``ssl_config_pb2``, so the message is defined here with the
    same package, name, fields and numbers (in a private descriptor pool, so a later ``ssl_config_pb2``
    in the default pool cannot clash), and the same text files parse as with ``tensorflow_model_server``.
    """
    try:
        from tensorflow_serving.config import ssl_config_pb2  # type: ignore[attr-defined]

        return ssl_config_pb2.SSLConfig
    except ImportError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    msg = fdp.message_type.add(name="SSLConfig")
    f = descriptor_pb2.FieldDescriptorProto
    for number, (name, ftype) in enumerate(
        [("server_key", f.TYPE_STRING), ("server_cert", f.TYPE_STRING), ("custom_ca", f.TYPE_STRING)]
        + [("client_verify", f.TYPE_BOOL)],
        start=1,
    ):
        msg.field.add(name=name, number=number, type=ftype, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    desc = pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.21
    return get_class(desc) if get_class else message_factory.MessageFactory(pool).GetPrototype(desc)


SSLConfig = _ssl_config_class()
"""``SSLConfig(server_key=PEM, server_cert=PEM, custom_ca=PEM, client_verify=bool)``: the fields hold the
PEM text itself, not file paths (as ``tensorflow_model_server`` reads them)."""


def _as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ssl_config_text(
    server_key: str | bytes, server_cert: str | bytes, custom_ca: str | bytes = "", client_verify: bool = False
) -> str:
    """The text-proto ``SSLConfig`` for ``--ssl_config_file`` from PEM contents (what TF Serving reads too)."""
    config = SSLConfig(
        server_key=_as_text(server_key),
        server_cert=_as_text(server_cert),
        custom_ca=_as_text(custom_ca),
        client_verify=client_verify,
    )
    return text_format.MessageToString(config)


def check_ssl_config(config: Any, source: str = "ssl config") -> Any:
    """Raises ``ValueError`` naming the field and the fix if ``config`` cannot make server credentials."""
    for name, what in (("server_key", "private key"), ("server_cert", "certificate chain")):
        value = getattr(config, name)
        if not value:
            raise ValueError(f"{source}: {name} is empty; it must hold the server's PEM {what}")
        if "-----BEGIN" not in value:
            raise ValueError(
                f"{source}: {name} is not PEM text (starts {value[:40]!r}); put the file's contents in the field, "
                "not its path (TF Serving reads the fields as PEM)"
            )
    if config.custom_ca and "-----BEGIN" not in config.custom_ca:
        raise ValueError(
            f"{source}: custom_ca is not PEM text (starts {config.custom_ca[:40]!r}); put the CA's PEM in it"
        )
    if config.client_verify and not config.custom_ca:
        # TF Serving would fall back to the system roots; gRPC's Python server needs the CA explicitly.
        raise ValueError(
            f"{source}: client_verify: true needs custom_ca, the PEM of the CA that signs client certificates"
        )
    return config


def load_ssl_config(path: str | Path) -> Any:
    """Parses and checks TF Serving's ``--ssl_config_file`` (a text-proto ``SSLConfig``)."""
    text = Path(path).read_text()
    try:
        config = text_format.Parse(text, SSLConfig())
    except text_format.ParseError as e:
        raise ValueError(
            f"{path}: not a text-proto SSLConfig (fields server_key, server_cert, custom_ca, client_verify): {e}"
        ) from None
    return check_ssl_config(config, str(path))


def server_credentials(config: Any) -> grpc.ServerCredentials:
    """gRPC server credentials from an ``SSLConfig``: the key and certificate chain, and with
    ``client_verify`` a client certificate signed by ``custom_ca`` required (mutual TLS)."""
    check_ssl_config(config)
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False
