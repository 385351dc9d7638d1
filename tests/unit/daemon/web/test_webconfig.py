"""--web.config.file: validation, TLS, client certificates, basic auth, headers, SIGHUP."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import select
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksm_exporter.daemon.web.server import ExporterHTTPServer
from ksm_exporter.daemon.web.webconfig import (
    WebConfig,
    WebConfigError,
    load_web_config,
    parse_web_config,
    reload_web_config,
)
from tests.support import copy_fixture, run_cli, run_exporter, wait_until
from tests.support.certs import Certs, make_certs
from tests.support.stub_app import StubApp


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


HEADER_VALUE = 'http_server_config: {{headers: {{Content-Security-Policy: "{}"}}}}\n'


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
        # Values Go's net/http would not send: beyond Latin-1, control characters.
        (HEADER_VALUE.format("default-src \u2018self\u2019"), "not a valid header value"),
        (HEADER_VALUE.format("default-src \\0"), "not a valid header value"),
        (HEADER_VALUE.format("a\\x1b]0;title\\x07"), "not a valid header value"),
        ('http_server_config: {headers: {"X Frame": deny}}\n', "'X Frame' is not a header name"),
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
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()  # ~0.25 s a check
    server = serve(f"basic_auth_users:\n  alice: {slow}\n  bob: {hashed('pw')}\n")
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request("GET", "/", headers=basic("bob", "pw"))
    assert c.getresponse().read() == b"GET /\n"  # bob's check is now cached
    wrong = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    wrong.request("GET", "/", headers=basic("alice", "wrong"))  # a second of bcrypt
    c.request("GET", "/", headers=basic("bob", "pw"))
    assert c.getresponse().status == 200
    # Served while the bcrypt check ran, not after it: alice's answer is not there yet.
    assert wrong.sock is not None
    assert select.select([wrong.sock], [], [], 0)[0] == []
    assert wrong.getresponse().status == 401


# ---- the real process: startup errors and SIGHUP ---------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("tls_server_config: {client_auth_type: Sometimes}\n", "invalid ClientAuth: Sometimes"),
        (HEADER_VALUE.format("\\u2018self\\u2019"), "is not a valid header value"),
    ],
)
def test_a_broken_file_at_startup_is_one_line_and_exit_1(
    tmp_path: Path, text: str, error: str
) -> None:
    config = tmp_path / "web.yml"
    config.write_text(text)
    root = copy_fixture("linux-6.18", tmp_path)
    proc = run_cli(
        "--web.listen-address=127.0.0.1:0",
        f"--path.sysfs={root}/sys",
        f"--path.procfs={root}/proc",
        f"--web.config.file={config}",
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert error in proc.stderr


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

        # A header value no answer could carry: refused, the running config keeps serving.
        config.write_text(
            f"basic_auth_users:\n  bob: {hashed('two')}\n"
            + HEADER_VALUE.format("default-src \\u2018self\\u2019")
        )
        exp.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "is not a valid header value" in exp.log(), what="the refusal")
        assert exp.log().count("web config reloaded") == 1
        assert exp.get("/metrics", headers=basic("bob", "two"))[0] == 200
        assert exp.proc.poll() is None


# ---- a hostile file: broken, special, or a downgrade ------------------------------------


def auth_yaml(user: str = "alice", password: str = "pw") -> str:
    return f"basic_auth_users:\n  {user}: {hashed(password)}\n"


def in_thread(fn: Callable[[], object], timeout: float = 10) -> object:
    """fn() on a thread; fails (instead of hanging the suite) when it blocks."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception as e:
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert result, "blocked"
    return result[0]


@pytest.mark.parametrize(
    "kind", ["empty", "blank", "fifo", "directory", "device", "not utf-8", "huge", "absent"]
)
def test_a_broken_or_special_file_keeps_the_running_config(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "web.yml"
    config.write_text(auth_yaml())
    current = load_web_config(config)
    config.unlink()
    if kind == "empty":
        config.write_bytes(b"")  # truncated to nothing by a failed write
    elif kind == "blank":
        config.write_text("\n  \n")
    elif kind == "fifo":
        os.mkfifo(config)  # no writer: a plain open() and read() would block for good
    elif kind == "directory":
        config.mkdir()
    elif kind == "device":
        config.symlink_to("/dev/zero")  # endless: reading it whole never ends
    elif kind == "not utf-8":
        config.write_bytes(b"basic_auth_users: {\xff: x}\n")
    elif kind == "huge":
        config.write_text("# " + "x" * 100_000 + "\n" + auth_yaml())
    error = in_thread(lambda: reload_web_config(current, config))
    assert isinstance(error, WebConfigError), error
    assert str(config) in str(error)


def test_an_empty_file_at_startup_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("")
    with pytest.raises(WebConfigError, match=r"empty file \(write \{\} for plain HTTP"):
        load_web_config(config)
    config.write_text("{}\n")
    assert load_web_config(config).tls is None


def test_a_reload_never_downgrades_the_listener(tmp_path: Path, certs: Certs) -> None:
    config = tmp_path / "web.yml"
    required = tls_yaml(
        certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.ca)
    )
    cases = [
        (tls_yaml(certs), "{}\n", "TLS off"),
        (tls_yaml(certs), auth_yaml(), "TLS off"),
        (auth_yaml(), "{}\n", "basic auth off"),
        (auth_yaml(), "http_server_config: {http2: true}\n", "basic auth off"),
        (tls_yaml(certs) + auth_yaml(), tls_yaml(certs), "basic auth off"),
        (required, tls_yaml(certs), "client certificates required -> none"),
    ]
    for before, after, why in cases:
        config.write_text(before)
        current = load_web_config(config)
        config.write_text(after)
        with pytest.raises(WebConfigError, match=f"would downgrade.*{why}.*restart the exporter"):
            reload_web_config(current, config)
    # Raising protection, or changing it without lowering it, is a reload like any other.
    for before, after in [
        ("{}\n", tls_yaml(certs) + auth_yaml()),
        (auth_yaml("alice"), auth_yaml("bob")),
        (tls_yaml(certs), required),
    ]:
        config.write_text(before)
        current = load_web_config(config)
        config.write_text(after)
        assert reload_web_config(current, config).describe() == load_web_config(config).describe()


@pytest.mark.parametrize(
    "text",
    [
        "a: 2001-13-45\n",  # PyYAML: ValueError, not YAMLError
        "[" * 5000 + "\n",  # RecursionError
        'tls_server_config: {cert_file: "a\\0b", key_file: x}\n',  # NUL in a path
    ],
)
def test_yaml_that_breaks_the_parser_is_a_clear_refusal(tmp_path: Path, text: str) -> None:
    with pytest.raises(WebConfigError):
        parse_web_config(text, tmp_path)


def test_bcrypt_runs_alike_for_known_and_unknown_users_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = parse_web_config(
        f"basic_auth_users:\n  alice: {hashed('pw')}\n  bob: {hashed('x')}\n", Path("/")
    ).auth
    assert auth is not None
    real = bcrypt.checkpw
    calls: list[bytes] = []

    def spy(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    assert auth.check("alice", "pw")
    assert not auth.check("alice", "wrong")
    assert not auth.check("mallory", "pw")
    # An unknown user costs one bcrypt check at the known users' cost: same time.
    assert len(calls) == 3 and calls[2] not in auth.users.values()
    assert calls[2][:7] == calls[0][:7] == b"$2b$04$"
    # Over 72 bytes bcrypt raises ValueError: a plain False, for known and unknown users.
    for user in ("alice", "mallory"):
        assert not auth.check(user, "p" * 100)
    auth.users["bob"] = b"$2b$04$not-a-hash"  # a hash bcrypt refuses
    assert not auth.check("bob", "x")


def test_an_over_long_password_is_a_plain_401(serve, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    server = serve(auth_yaml())
    with caplog.at_level(logging.DEBUG):
        for user in ("alice", "mallory"):
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            c.request("GET", "/", headers=basic(user, "p" * 100))
            assert c.getresponse().status == 401
            c.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize(
    ("token", "checked"),
    [
        (b"\xe9\xe9", False),  # not base64 (and not ASCII)
        (base64.b64encode(b"\xff\xfe:\xe9"), False),  # credentials that are not UTF-8
        (base64.b64encode("\u00e9ric:p\u00e4ss".encode()), True),  # UTF-8, unknown user
    ],
)
def test_non_ascii_or_undecodable_credentials_are_a_401(
    serve,
    token: bytes,
    checked: bool,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    server = serve(auth_yaml())
    with (
        caplog.at_level(logging.DEBUG),
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as s,
    ):
        s.sendall(b"GET / HTTP/1.1\r\nAuthorization: Basic " + token + b"\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 401 ")
        if not checked:  # no bcrypt was spent: the connection stays open, as without any
            ok = base64.b64encode(b"alice:pw")
            s.sendall(b"GET / HTTP/1.1\r\nAuthorization: Basic " + ok + b"\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_sighup_with_a_truncated_or_special_file_keeps_tls_and_auth(
    tmp_path: Path, certs: Certs
) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(tls_yaml(certs) + auth_yaml("alice", "one"))
    ctx = client_context(certs)
    with run_exporter(root, f"--web.config.file={config}", tmp=tmp_path) as exp:
        assert https_get(exp.port, ctx)[0] == 401

        def refused(n: int) -> None:
            exp.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: exp.log().count("not reloaded") == n, what=f"refusal {n}")
            assert https_get(exp.port, ctx)[0] == 401  # still TLS, still basic auth
            assert https_get(exp.port, ctx, basic("alice", "one"))[0] == 200

        config.write_text("")  # truncated: TLS and auth must not turn off
        refused(1)
        config.write_text("basic_auth_users:\n")  # cut after its first line
        refused(2)
        config.unlink()
        os.mkfifo(config)  # the reload must not hang on it, nor the shutdown after
        refused(3)
        lines = [line for line in exp.log().splitlines() if "not reloaded" in line]
        assert all("level=error" in line for line in lines), lines
        assert "restart the exporter to apply it" in lines[1]
        exp.proc.send_signal(signal.SIGTERM)
        assert exp.proc.wait(15) == 0


# ---- any bytes as the file: a reload changes the config only to a valid, no weaker one ---


def yaml_pieces(certs: Certs) -> st.SearchStrategy[bytes]:
    """Fragments of real configurations, cut and mixed with arbitrary bytes."""
    valid = [
        "{}\n",
        auth_yaml(),
        tls_yaml(certs),
        tls_yaml(certs) + auth_yaml(),
        tls_yaml(certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file="x"),
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        "tls_server_config:\n",
        "basic_auth_users:\n",
    ]
    whole = st.sampled_from(valid).map(str.encode)
    cut = st.tuples(whole, st.integers(0, 400)).map(lambda p: p[0][: p[1]])
    return st.lists(whole | cut | st.binary(max_size=40), max_size=4).map(b"".join)


@pytest.fixture(scope="module")
def currents(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> list[WebConfig]:
    d = tmp_path_factory.mktemp("currents")
    required = tls_yaml(
        certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.ca)
    )
    texts = ["{}\n", auth_yaml(), tls_yaml(certs), required + auth_yaml()]
    return [parse_web_config(text, d) for text in texts]


def test_any_bytes_reload_only_to_a_valid_config_that_is_no_weaker(
    certs: Certs, currents: list[WebConfig], tmp_path: Path
) -> None:
    config = tmp_path / "web.yml"
    strength = ("none", "optional", "required").index

    @settings(max_examples=150, deadline=None)
    @given(data=yaml_pieces(certs), which=st.integers(0, len(currents) - 1))
    def check(data: bytes, which: int) -> None:
        current = currents[which]
        config.write_bytes(data)
        try:
            new = reload_web_config(current, config)
        except WebConfigError:
            return  # refused: the caller keeps `current`
        assert new.describe() == load_web_config(config).describe()  # what the file says
        assert new.tls is not None or current.tls is None
        assert new.auth is not None or current.auth is None
        assert new.tls is None or strength(new.client_auth) >= strength(current.client_auth)

    check()
