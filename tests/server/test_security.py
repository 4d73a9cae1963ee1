"""Safety: TLS round trip, token on every rpc (reflection too) but health, loopback-only default."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from engine.cli import main as cli_main
from server import Client, ServerConfig
from server.auth import check_bind, is_loopback

TOKEN = "tls-and-token"


def make_cert(tmp_path):
    """A self-signed CA and a server certificate for localhost / 127.0.0.1 (PEM files)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("vecdex test CA"))
        .issuer_name(name("vecdex test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {n: tmp_path / f"{n}.pem" for n in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_round_trip(tmp_path, start_server):
    certs = make_cert(tmp_path)
    srv = start_server(token=TOKEN, tls_cert=str(certs["cert"]), tls_key=str(certs["key"]))
    with Client(srv.address, token=TOKEN, tls_ca=certs["ca"]) as client:
        col = client.create_collection("secure", dim=3, index="flat")
        col.add(["a", "b"], [[1, 0, 0], [0, 1, 0]], [{"p": "x"}, None])
        hits = col.search(np.array([1, 0, 0.1]), k=1)
        assert hits[0].id == "a" and hits[0].payload == {"p": "x"}
    # The right CA but no token: the channel is fine, the call is not.
    with Client(srv.address, tls_ca=certs["ca"]) as anon:
        with pytest.raises(grpc.RpcError) as info:
            anon.list_collections()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Plaintext against a TLS port fails (no silent downgrade).
    with Client(srv.address, token=TOKEN, timeout=3) as plain:
        with pytest.raises(grpc.RpcError) as info:
            plain.list_collections()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # A CA that did not sign the server's certificate fails too.
    (tmp_path / "other").mkdir()
    other = make_cert(tmp_path / "other")
    with Client(srv.address, token=TOKEN, tls_ca=other["ca"], timeout=3) as wrong:
        with pytest.raises(grpc.RpcError) as info:
            wrong.list_collections()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_answers_without_token_and_reflection_needs_it(start_server):
    srv = start_server(token=TOKEN)
    with grpc.insecure_channel(srv.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "vecdex.v1.VecDex"):
            res = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert res.status == health_pb2.HealthCheckResponse.SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(refl.ServerReflectionInfo(iter([ask]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        md = (("authorization", f"Bearer {TOKEN}"),)
        answers = list(refl.ServerReflectionInfo(iter([ask]), metadata=md, timeout=10))
        services = {s.name for s in answers[0].list_services_response.service}
        assert {"vecdex.v1.VecDex", "grpc.health.v1.Health"} <= services
        # grpcurl describes the service from its file descriptor.
        ask_file = reflection_pb2.ServerReflectionRequest(file_containing_symbol="vecdex.v1.VecDex")
        answers = list(refl.ServerReflectionInfo(iter([ask_file]), metadata=md, timeout=10))
        assert answers[0].file_descriptor_response.file_descriptor_proto


def test_health_turns_not_serving_on_shutdown(start_server):
    srv = start_server()
    with grpc.insecure_channel(srv.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
        srv.call(srv.server._health.enter_graceful_shutdown())
        res = health.Check(health_pb2.HealthCheckRequest(service="vecdex.v1.VecDex"), timeout=10)
        assert res.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_loopback_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("[::1]") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")
    check_bind("127.0.0.1", None, False)
    check_bind("0.0.0.0", "tok", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="--token"):
        check_bind("0.0.0.0", None, False)
    with pytest.raises(ValueError, match="tls"):
        ServerConfig(data="x", tls_cert="c.pem")


def test_cli_refuses_public_bind_without_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VECDEX_TOKEN", raising=False)
    rc = cli_main(["serve", "--data", str(tmp_path / "d"), "--host", "0.0.0.0", "--port", "0"])
    assert rc == 2
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err
    rc = cli_main(["serve", "--data", str(tmp_path / "d"), "--tls-cert", "x.pem", "--port", "0"])
    assert rc == 2


def test_cli_reports_a_port_in_use(tmp_path, capsys, start_server):
    srv = start_server()
    rc = cli_main(["serve", "--data", str(tmp_path / "d2"), "--port", str(srv.port)])
    assert rc == 2
    assert "could not listen on 127.0.0.1:" in capsys.readouterr().err
