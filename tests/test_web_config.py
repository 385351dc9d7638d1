"""--web.config.file: validation, TLS, client certificates, basic auth, headers, SIGHUP."""

from __future__ import annotations

import base64
import http.client
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from ksm_exporter.daemon.web.server import ExporterHTTPServer
from ksm_exporter.daemon.web.webconfig import WebConfigError, load_web_config, parse_web_config

from .certs import Certs, make_certs
from .support import copy_fixture, exporter_command, free_port, run_exporter, wait_until
from .test_server import StubApp


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def tls_yaml(certs: Certs, **extra: str) -> str:
    lines = [
        "tls_server_config:",
        f"  cert_file: {certs.server.cert}",
        f"  key_file: {certs.server.key}",
    ]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]\n", "expected a mapping"),
        ("tls_server_config: {cert_file: a\n", "not valid YAML"),
        ("web_server_config: {}\n", "unknown key 'web_server_config'"),
        ("tls_server_config: {certfile: a}\n", "unknown key 'certfile'"),
        ("tls_server_config: {cipher_suites: [x]}\n", "cipher_suites is not supported"),
        ("tls_server_config: {client_allowed_sans: [x]}\n", "client_allowed_sans is not supp"),
        ("rate_limit: {burst: 1}\n", "rate_limit is not supported"),
        ("cipher_suites: [x]\n", "top level: unknown key 'cipher_suites'"),  # tls_server_config's
        ("http_server_config: {rate_limit: {}}\n", "unknown key 'rate_limit'"),  # a top key
        ("tls_server_config: {client_auth_type: Sometimes}\n", "invalid ClientAuth: Sometimes"),
        ("tls_server_config: {min_version: TLS14}\n", "unknown TLS version 'TLS14'"),
        ("tls_server_config: {cert_file: a.crt}\n", "missing key_file"),
        ("tls_server_config: {key_file: a.key}\n", "missing cert_file"),
        ("tls_server_config: {cert_file: /nonexistent.crt, key_file: /x.key}\n", "cannot load"),
        ("basic_auth_users: {alice: secret}\n", "basic_auth_users.alice: not a bcrypt hash"),
        ("basic_auth_users: [alice]\n", "expected a mapping"),
        ("http_server_config: {headers: {X-Powered-By: me}}\n", "can not be configured"),
        ("http_server_config: {headers: {X-Frame-Options: allow}}\n", "invalid value for"),
        ("http_server_config: {http2: maybe}\n", "http2: expected true or false"),
    ],
)
def test_invalid_files_are_refused_with_the_reason(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(WebConfigError, match=error.replace("(", r"\(")):
        parse_web_config(text, tmp_path)


def test_client_ca_without_a_client_auth_policy_is_refused(certs: Certs) -> None:
    text = tls_yaml(certs, client_ca_file=str(certs.ca))
    with pytest.raises(WebConfigError, match="without a Client Auth Policy"):
        parse_web_config(text, Path("/"))


def test_empty_file_is_plain_http_without_auth(tmp_path: Path) -> None:
    web = parse_web_config("", tmp_path)
    assert web.tls is None and web.auth is None and web.headers == ()


def test_relative_paths_are_relative_to_the_file(tmp_path: Path, certs: Certs) -> None:
    config = certs.server.cert.parent / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        "  min_version: TLS13\n"
        f"basic_auth_users:\n  alice: {hashed('pw')}\n"
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
    )
    web = load_web_config(config)
    assert web.tls is not None and web.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.client_auth == "required"
    assert web.auth is not None and set(web.auth.users) == {"alice"}
    assert web.headers == (("X-Frame-Options", "deny"),)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read"):
        load_web_config(tmp_path / "absent.yml")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start an in-process server with the given web config text."""
    servers: list[ExporterHTTPServer] = []

    def start(text: str) -> ExporterHTTPServer:
        server = ExporterHTTPServer(
            "127.0.0.1:0",
            StubApp(),
            parse_web_config(text, tmp_path),  # type: ignore[arg-type]
        )
        server.serve_in_thread()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def client_context(
    certs: Certs, cert: object = None, max_version: str | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)  # type: ignore[attr-defined]
    if max_version:
        ctx.maximum_version = getattr(ssl.TLSVersion, max_version)
    return ctx


def https_get(
    port: int, ctx: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPResponse]:
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    c.request("GET", "/metrics", headers=headers or {})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, r


def test_tls_serves_and_a_silent_client_blocks_nobody(serve, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = serve(tls_yaml(certs))
    with socket.create_connection(("127.0.0.1", server.port)):  # never sends a ClientHello
        status, _ = https_get(server.port, client_context(certs))
        assert status == 200
    # Plain HTTP on a TLS port is not served.
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        c.request("GET", "/metrics")
        c.getresponse()


def handshake_fails(port: int, ctx: ssl.SSLContext) -> bool:
    """With TLS 1.3 the server's verdict on the client certificate arrives after the
    client's handshake returns: on the first read."""
    try:
        https_get(port, ctx)
    except (ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected):
        return True
    return False


def test_a_required_client_certificate(serve, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = serve(
        tls_yaml(certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.ca))
    )
    assert handshake_fails(server.port, client_context(certs))  # none given
    assert handshake_fails(server.port, client_context(certs, certs.stranger))  # wrong CA
    status, _ = https_get(server.port, client_context(certs, certs.client))
    assert status == 200


def test_an_optional_client_certificate(serve, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = serve(
        tls_yaml(certs, client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(certs.ca))
    )
    assert https_get(server.port, client_context(certs))[0] == 200
    assert https_get(server.port, client_context(certs, certs.client))[0] == 200
    assert handshake_fails(server.port, client_context(certs, certs.stranger))


def test_min_version_refuses_older_clients(serve, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = serve(tls_yaml(certs, min_version="TLS13"))
    assert handshake_fails(server.port, client_context(certs, max_version="TLSv1_2"))
    assert https_get(server.port, client_context(certs))[0] == 200


def test_basic_auth(serve, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = serve(
        tls_yaml(certs)
        + f"basic_auth_users:\n  alice: {hashed('wonderland')}\n"
        + "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    ctx = client_context(certs)
    status, r = https_get(server.port, ctx)
    assert status == 401 and r.getheader("WWW-Authenticate") == "Basic"
    assert https_get(server.port, ctx, basic("alice", "wrong"))[0] == 401
    assert https_get(server.port, ctx, basic("bob", "wonderland"))[0] == 401
    assert https_get(server.port, ctx, {"Authorization": "Basic !!!"})[0] == 401
    assert not server.web.auth.cached("alice", "wonderland")
    status, r = https_get(server.port, ctx, basic("alice", "wonderland"))
    assert status == 200 and r.getheader("X-Content-Type-Options") == "nosniff"
    assert server.web.auth.cached("alice", "wonderland")  # the next scrape skips bcrypt
    assert https_get(server.port, ctx, basic("alice", "wonderland"))[0] == 200


def test_wrong_passwords_do_not_stall_other_scrapes(serve) -> None:  # type: ignore[no-untyped-def]
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()  # ~250 ms a check
    server = serve(f"basic_auth_users:\n  alice: {slow}\n  bob: {hashed('pw')}\n")
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request("GET", "/", headers=basic("bob", "pw"))
    assert c.getresponse().read() == b"GET /\n"  # bob's check is now cached
    wrong = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    wrong.request("GET", "/", headers=basic("alice", "wrong"))  # costs 250 ms of bcrypt
    start = time.monotonic()
    c.request("GET", "/", headers=basic("bob", "pw"))
    assert c.getresponse().status == 200
    served_during = time.monotonic() - start
    assert wrong.getresponse().status == 401
    # Served while the bcrypt check ran, not after it (a generous bound on a busy box).
    assert served_during < 0.2


# ---- the real process: startup errors and SIGHUP ---------------------------------------


def test_a_broken_file_at_startup_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config: {client_auth_type: Sometimes}\n")
    root = copy_fixture("linux-6.18", tmp_path)
    proc = subprocess.run(
        exporter_command(
            f"--web.listen-address=127.0.0.1:{free_port()}",
            f"--path.sysfs={root}/sys",
            f"--path.procfs={root}/proc",
            f"--web.config.file={config}",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "invalid ClientAuth: Sometimes" in proc.stderr


def test_sighup_reloads_and_a_broken_file_keeps_the_previous_one(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: {hashed('one')}\n")
    with run_exporter(root, f"--web.config.file={config}", tmp=tmp_path) as exp:
        assert exp.get("/metrics")[0] == 401
        assert exp.get("/metrics", headers=basic("alice", "one"))[0] == 200

        config.write_text(f"basic_auth_users:\n  bob: {hashed('two')}\n")
        exp.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "web config reloaded" in exp.log(), what="the reload")
        assert exp.get("/metrics", headers=basic("bob", "two"))[0] == 200
        assert exp.get("/metrics", headers=basic("alice", "one"))[0] == 401

        config.write_text("basic_auth_users: {carol: plaintext}\n")
        exp.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "not reloaded" in exp.log(), what="the refusal")
        assert "basic_auth_users.carol: not a bcrypt hash" in exp.log()
        assert exp.get("/metrics", headers=basic("bob", "two"))[0] == 200
        assert exp.proc.poll() is None
