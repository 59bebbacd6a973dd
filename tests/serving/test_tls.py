"""TLS: TF Serving's ``--ssl_config_file`` on the server, channel credentials on the client.

A CA, the server's certificate (for ``localhost`` / ``127.0.0.1``), a client certificate it signs, and a
second, unrelated CA with its own client certificate are made at run time (EC P-256: milliseconds).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mvke_tf.serving.client import ServingClient, ServingError
from mvke_tf.serving.server import ModelServer
from tiny_servable import examples, export_tiny

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool = False, server: bool = False) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=False)
    else:
        usage = dict(key_cert_sign=False, crl_sign=False, digital_signature=True)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    builder = builder.add_extension(
        x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usage,
        ),
        critical=True,
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _ca(name: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _cert(name, key, name, key, ca=True), key


def _leaf(name: str, ca: tuple[bytes, ec.EllipticCurvePrivateKey], server: bool = False) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.load_pem_x509_certificate(ca[0]).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return _pem_key(key), _cert(name, key, issuer, ca[1], server=server)


@pytest.fixture(scope="module")
def pki():
    ca, rogue_ca = _ca("test serving CA"), _ca("some other CA")
    server_key, server_cert = _leaf("localhost", ca, server=True)
    client_key, client_cert = _leaf("a client", ca)
    rogue_key, rogue_cert = _leaf("a stranger", rogue_ca)
    return dict(
        ca=ca[0],
        rogue_ca=rogue_ca[0],
        server=(server_key, server_cert),
        client=(client_key, client_cert),
        rogue_client=(rogue_key, rogue_cert),
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny"))


def write_ssl_config(path, pki, client_verify: bool = False) -> str:
    from mvke_tf.serving.server import ssl_config_text

    key, cert = pki["server"]
    path.write_text(ssl_config_text(key, cert, custom_ca=pki["ca"], client_verify=client_verify))
    return str(path)


def tls_server(base, pki, tmp_path, client_verify: bool = False, **kw) -> ModelServer:
    from mvke_tf.serving.server import load_ssl_config

    config = load_ssl_config(write_ssl_config(tmp_path / "ssl.pbtxt", pki, client_verify))
    return ModelServer({"tiny": base}, port=0, poll_seconds=0, warmup=False, ssl_config=config, **kw).start()


def refused(client: ServingClient) -> ServingError:
    with pytest.raises(ServingError) as err:
        client.score(examples(2))
    client.close()
    assert err.value.code == UNAVAILABLE, err.value
    return err.value


def test_tls_round_trip_equals_plaintext(base, pki, tmp_path):
    rows = examples(5, start=0.5)
    plain = ModelServer({"tiny": base}, port=0, poll_seconds=0, warmup=False).start()
    secure = tls_server(base, pki, tmp_path)
    try:
        with ServingClient(plain.target, "tiny", retries=0, timeout=30) as c:
            want = c.score(rows)
        target = f"localhost:{secure.port}"
        with ServingClient(target, "tiny", retries=0, timeout=30, root_certificates=pki["ca"]) as c:
            assert c.tls
            got = c.score(rows)
            assert c.status()[0].state == "AVAILABLE"
        assert set(got) == set(want) == {"y"}
        np.testing.assert_array_equal(got["y"], want["y"])
        # Any grpc.ChannelCredentials, and the certificate checked for the IP address too.
        creds = grpc.ssl_channel_credentials(pki["ca"])
        with ServingClient(f"127.0.0.1:{secure.port}", "tiny", retries=0, credentials=creds) as c:
            np.testing.assert_array_equal(c.score(rows)["y"], want["y"])
    finally:
        plain.stop(0)
        secure.stop(0)


def test_client_without_the_ca_is_refused(base, pki, tmp_path):
    srv = tls_server(base, pki, tmp_path)
    target = f"localhost:{srv.port}"
    try:
        refused(ServingClient(target, "tiny", retries=0, timeout=10))  # plaintext
        refused(ServingClient(target, "tiny", retries=0, timeout=10, root_certificates=pki["rogue_ca"]))
        refused(ServingClient(target, "tiny", retries=0, timeout=10, credentials=grpc.ssl_channel_credentials()))
    finally:
        srv.stop(0)


def test_client_verify_requires_a_ca_signed_client_certificate(base, pki, tmp_path):
    srv = tls_server(base, pki, tmp_path, client_verify=True)
    target = f"localhost:{srv.port}"
    try:
        refused(ServingClient(target, "tiny", retries=0, timeout=10, root_certificates=pki["ca"]))  # no certificate
        key, cert = pki["rogue_client"]
        kw = dict(retries=0, timeout=10, root_certificates=pki["ca"])
        refused(ServingClient(target, "tiny", private_key=key, certificate_chain=cert, **kw))
        key, cert = pki["client"]
        with ServingClient(target, "tiny", private_key=key, certificate_chain=cert, **kw) as c:
            np.testing.assert_allclose(c.score(examples(3))["y"], [0.0, 2.0, 4.0])
    finally:
        srv.stop(0)
    with pytest.raises(ValueError, match="both private_key and certificate_chain"):
        ServingClient(target, "tiny", root_certificates=pki["ca"], private_key=key)
    with pytest.raises(ValueError, match="either credentials or"):
        ServingClient(target, "tiny", root_certificates=pki["ca"], credentials=grpc.ssl_channel_credentials())


def test_ssl_config_file_flag(base, pki, tmp_path):
    """``mvke-tf serve --ssl_config_file`` (``python -m mvke_tf.serving``): the same file as
    ``tensorflow_model_server``."""
    from mvke_tf.serving.__main__ import build_parser, build_server

    parser = build_parser()
    path = write_ssl_config(tmp_path / "ssl_config.txt", pki, client_verify=True)
    srv = build_server(parser.parse_args(["--model", f"tiny={base}", "--port", "0", "--ssl_config_file", path]))
    assert srv.ssl_config.client_verify and srv.ssl_config.custom_ca == pki["ca"].decode()
    srv.start()
    try:
        key, cert = pki["client"]
        target = f"localhost:{srv.port}"
        with ServingClient(target, "tiny", root_certificates=pki["ca"], private_key=key, certificate_chain=cert) as c:
            assert c.score(examples(2))["y"].shape == (2,)
    finally:
        srv.stop(0)
    (tmp_path / "bad.txt").write_text('server_key: "/etc/ssl/server.key"\nserver_cert: "/etc/ssl/server.crt"\n')
    with pytest.raises(SystemExit):
        build_server(parser.parse_args(["--model", f"tiny={base}", "--ssl_config_file", str(tmp_path / "bad.txt")]))


def test_ssl_config_proto_and_errors(pki, tmp_path):
    from mvke_tf.serving.server import SSLConfig, check_ssl_config, load_ssl_config

    # TF Serving's message: tensorflow_serving/config/ssl_config.proto.
    fields = {f.name: (f.number, f.type) for f in SSLConfig.DESCRIPTOR.fields}
    assert SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
    string, boolean = 9, 8  # FieldDescriptor.TYPE_STRING, TYPE_BOOL
    assert fields == {"server_key": (1, string), "server_cert": (2, string), "custom_ca": (3, string)} | {
        "client_verify": (4, boolean)
    }
    # A file written by hand, as in TF Serving's docs: adjacent string literals concatenate.
    key, cert = (v.decode() for v in pki["server"])
    lines = [f"server_key: {' '.join(text_format_lines(key))}", f"server_cert: {' '.join(text_format_lines(cert))}"]
    (tmp_path / "hand.txt").write_text("\n".join(lines) + "\nclient_verify: false\n")
    config = load_ssl_config(tmp_path / "hand.txt")
    assert (config.server_key, config.server_cert, config.client_verify) == (key, cert, False)

    bad = {
        "server_key is empty": SSLConfig(server_cert=cert),
        "server_cert is not PEM text": SSLConfig(server_key=key, server_cert="/etc/ssl/server.crt"),
        "custom_ca is not PEM text": SSLConfig(server_key=key, server_cert=cert, custom_ca="ca.pem"),
        "client_verify: true needs custom_ca": SSLConfig(server_key=key, server_cert=cert, client_verify=True),
    }
    for message, config in bad.items():
        with pytest.raises(ValueError, match=message):
            check_ssl_config(config)
    (tmp_path / "typo.txt").write_text('server_keys: "x"\n')
    with pytest.raises(ValueError, match="not a text-proto SSLConfig"):
        load_ssl_config(tmp_path / "typo.txt")


def text_format_lines(pem: str) -> list[str]:
    """PEM as one text-proto string literal per line (base64 and dashes need no escaping)."""
    return [f'"{line}\\n"' for line in pem.strip().split("\n")]


def test_plaintext_on_a_non_loopback_address_warns(base, pki, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mvke_tf.serving.server")
    for host, tls, warns in (("0.0.0.0", False, True), ("127.0.0.1", False, False), ("0.0.0.0", True, False)):
        caplog.clear()
        if tls:
            srv = tls_server(base, pki, tmp_path, host=host)
        else:
            srv = ModelServer({"tiny": base}, host=host, port=0, poll_seconds=0, warmup=False).start()
        srv.stop(0)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("without TLS" in w and "--ssl_config_file" in w for w in warnings) == warns, (host, tls, warnings)
