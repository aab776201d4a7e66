"""Smoke tests of the test-service fixtures against the real servers they start.

Each test checks behaviour a later test will rely on (TLS really verified, a scripted
451 really seen by smtplib, a lying Content-Length really sent...), so it fails if the
fixture stops doing what it promises.
"""

from __future__ import annotations

import http.client
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ServerSelectionTimeoutError

from tests.services.http import HTTPTestServer, running_http_server
from tests.services.mongo import MongoDaemon, client_for, ping, temporary_database
from tests.services.smtp import (
    SMTP_AUTH_PASSWORD,
    SMTP_AUTH_USER,
    SMTPTestServer,
    TLSFiles,
    running_smtp_server,
)

SMTP_TIMEOUT = 5.0
HTTP_TIMEOUT = 5.0


def _message(n: int = 1, to: str = "traveller@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "noreply@taatom.test"
    msg["To"] = to
    msg["Subject"] = f"Trip update {n}"
    msg.set_content(f"Body {n}\n")
    return msg


# -- SMTP ---------------------------------------------------------------------------------


def test_plain_smtp_records_the_message(smtp_server: SMTPTestServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        refused = client.send_message(_message(), to_addrs=["a@example.org", "b@example.org"])

    assert refused == {}
    [got] = smtp_server.messages
    assert got.mail_from == "noreply@taatom.test"
    assert got.rcpt_tos == ("a@example.org", "b@example.org")
    assert got.parsed()["Subject"] == "Trip update 1"
    assert got.content.endswith(b"\r\n\r\nBody 1\r\n")  # raw wire bytes, CRLF line ends
    assert got.tls is False
    assert got.auth_login is None
    assert smtp_server.connections == 1


def test_starttls_verifies_against_the_fixture_cafile(smtp_starttls_server: SMTPTestServer) -> None:
    server = smtp_starttls_server
    assert server.cafile is not None
    context = ssl.create_default_context(cafile=server.cafile)
    with smtplib.SMTP(server.host, server.port, timeout=SMTP_TIMEOUT) as client:
        client.starttls(context=context)
        client.send_message(_message())
        peer_cert = client.sock.getpeercert()  # type: ignore[union-attr]

    assert peer_cert is not None
    assert ("IP Address", "127.0.0.1") in peer_cert["subjectAltName"]
    [got] = server.messages
    assert got.tls is True
    # The STARTTLS upgrade happens on the same TCP connection and must not count twice.
    assert server.connections == 1


def test_starttls_certificate_is_not_trusted_without_the_cafile(
    smtp_starttls_server: SMTPTestServer,
) -> None:
    context = ssl.create_default_context()  # system CAs only
    with (
        smtplib.SMTP(smtp_starttls_server.host, smtp_starttls_server.port, timeout=SMTP_TIMEOUT) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=context)
    assert smtp_starttls_server.messages == []


def test_starttls_server_refuses_mail_before_starttls(smtp_starttls_server: SMTPTestServer) -> None:
    with smtplib.SMTP(smtp_starttls_server.host, smtp_starttls_server.port, timeout=SMTP_TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.send_message(_message())
    assert excinfo.value.smtp_code == 530
    assert smtp_starttls_server.messages == []


def test_implicit_tls_server(smtp_ssl_server: SMTPTestServer) -> None:
    server = smtp_ssl_server
    with smtplib.SMTP_SSL(
        server.host, server.port, timeout=SMTP_TIMEOUT, context=server.client_context()
    ) as client:
        client.send_message(_message())

    [got] = smtp_ssl_server.messages
    assert got.tls is True
    assert smtp_ssl_server.connections == 1


def test_implicit_tls_server_does_not_speak_plain_smtp(smtp_ssl_server: SMTPTestServer) -> None:
    with pytest.raises((smtplib.SMTPServerDisconnected, TimeoutError, ConnectionError)):
        smtplib.SMTP(smtp_ssl_server.host, smtp_ssl_server.port, timeout=0.3)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_good_credentials(smtp_auth_server: SMTPTestServer, mechanism: str) -> None:
    server = smtp_auth_server
    assert (server.username, server.password) == (SMTP_AUTH_USER, SMTP_AUTH_PASSWORD)
    with smtplib.SMTP(server.host, server.port, timeout=SMTP_TIMEOUT) as client:
        client.ehlo()
        client.user, client.password = SMTP_AUTH_USER, SMTP_AUTH_PASSWORD
        auth_object = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, auth_object)
        assert code == 235
        client.send_message(_message())

    [got] = server.messages
    assert got.auth_login == SMTP_AUTH_USER
    assert got.tls is False


def test_auth_after_starttls(smtp_auth_server: SMTPTestServer) -> None:
    server = smtp_auth_server
    with smtplib.SMTP(server.host, server.port, timeout=SMTP_TIMEOUT) as client:
        client.starttls(context=server.client_context())
        client.login(SMTP_AUTH_USER, SMTP_AUTH_PASSWORD)
        client.send_message(_message())

    [got] = server.messages
    assert (got.tls, got.auth_login) == (True, SMTP_AUTH_USER)


@pytest.mark.parametrize(
    ("user", "password"),
    [(SMTP_AUTH_USER, "wrong-password"), ("intruder", SMTP_AUTH_PASSWORD)],
)
def test_auth_bad_credentials_are_refused(smtp_auth_server: SMTPTestServer, user: str, password: str) -> None:
    with smtplib.SMTP(smtp_auth_server.host, smtp_auth_server.port, timeout=SMTP_TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login(user, password)
        assert excinfo.value.smtp_code == 535
        # Still unauthenticated: MAIL is refused.
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(_message())
        assert refused.value.smtp_code == 530
    assert smtp_auth_server.messages == []


def test_auth_server_refuses_mail_without_login(smtp_auth_server: SMTPTestServer) -> None:
    with smtplib.SMTP(smtp_auth_server.host, smtp_auth_server.port, timeout=SMTP_TIMEOUT) as client:
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"].split()
        assert "LOGIN" in client.esmtp_features["auth"].split()
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.send_message(_message())
    assert excinfo.value.smtp_code == 530


def test_scripted_451_once_then_accepted(smtp_server: SMTPTestServer) -> None:
    smtp_server.script_replies([451])
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            client.send_message(_message(1))
        assert excinfo.value.smtp_code == 451
        assert b"4.3.0" in excinfo.value.smtp_error
        client.send_message(_message(2))

    assert [m.parsed()["Subject"] for m in smtp_server.messages] == ["Trip update 2"]
    [rejected] = smtp_server.rejected
    assert rejected.reply.startswith("451 ")
    assert rejected.rcpt_tos == ("traveller@example.org",)


def test_scripted_reply_lines_are_used_verbatim(smtp_server: SMTPTestServer) -> None:
    smtp_server.script_replies(["452 4.3.1 Mailbox full, custom text", 250])
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            client.send_message(_message(1))
        client.send_message(_message(2))
        client.send_message(_message(3))
    assert (excinfo.value.smtp_code, excinfo.value.smtp_error) == (452, b"4.3.1 Mailbox full, custom text")
    assert len(smtp_server.messages) == 2


def test_always_550_until_reset(smtp_server: SMTPTestServer) -> None:
    smtp_server.always_reply(550)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        for n in (1, 2):
            with pytest.raises(smtplib.SMTPDataError) as excinfo:
                client.send_message(_message(n))
            assert excinfo.value.smtp_code == 550
            assert b"5.1.1" in excinfo.value.smtp_error
        smtp_server.always_reply(None)
        client.send_message(_message(3))
    assert len(smtp_server.rejected) == 2
    assert len(smtp_server.messages) == 1


def test_rejected_recipient(smtp_server: SMTPTestServer) -> None:
    smtp_server.reject_recipient("gone@example.org")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        refused = client.send_message(_message(), to_addrs=["gone@example.org", "here@example.org"])
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(_message(), to_addrs=["GONE@example.org"])
    assert refused == {"gone@example.org": (550, b"5.1.1 No such user")}
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("here@example.org",)


def test_invalid_scripted_reply_is_refused(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(ValueError):
        smtp_server.script_replies(["ok"])
    with pytest.raises(ValueError):
        smtp_server.script_replies([99])


def test_three_messages_over_one_connection(smtp_server: SMTPTestServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        for n in range(3):
            client.send_message(_message(n))
    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 1


def test_three_messages_over_three_connections(smtp_server: SMTPTestServer) -> None:
    for n in range(3):
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
            client.send_message(_message(n))
    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 3


def test_a_connection_without_mail_is_counted(smtp_server: SMTPTestServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        client.noop()
    assert smtp_server.connections == 1
    assert smtp_server.messages == []


def test_clear_forgets_everything(smtp_server: SMTPTestServer) -> None:
    smtp_server.script_replies([451, 451])
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPDataError):
            client.send_message(_message())
        smtp_server.clear()
        client.send_message(_message())  # the second scripted 451 is gone too
    assert len(smtp_server.messages) == 1
    assert smtp_server.rejected == []
    assert smtp_server.connections == 0  # the connection was opened before clear()


def test_wait_for_messages_is_bounded(smtp_server: SMTPTestServer) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        smtp_server.wait_for_messages(1, timeout=0.2)
    assert time.monotonic() - started < 2.0

    def send_later() -> None:
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=SMTP_TIMEOUT) as client:
            client.send_message(_message())

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        assert len(smtp_server.wait_for_messages(1, timeout=SMTP_TIMEOUT)) == 1
    finally:
        sender.join(SMTP_TIMEOUT)


def test_ssl_server_with_auth_via_context_manager(smtp_tls_files: TLSFiles) -> None:
    with running_smtp_server(security="ssl", tls_files=smtp_tls_files, auth=("mailer", "pw")) as server:
        with smtplib.SMTP_SSL(
            server.host, server.port, timeout=SMTP_TIMEOUT, context=server.client_context()
        ) as client:
            client.login("mailer", "pw")
            client.send_message(_message())
        [got] = server.messages
        assert (got.tls, got.auth_login) == (True, "mailer")
        port = server.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()


# -- MongoDB ------------------------------------------------------------------------------


def test_mongo_url_answers_ping(mongo_url: str) -> None:
    assert ping(mongo_url)


def test_mongo_db_insert_and_group_with_add_to_set(mongo_db: Database[dict[str, Any]]) -> None:
    assert mongo_db.name.startswith("t_")
    assert len(mongo_db.name) == 14
    events = mongo_db["analytics_events"]
    events.insert_many(
        [
            {"type": "view", "user_id": "u1"},
            {"type": "view", "user_id": "u2"},
            {"type": "view", "user_id": "u1"},
            {"type": "signup", "user_id": "u3"},
            {"type": "signup", "user_id": None},
        ]
    )
    rows = list(
        events.aggregate(
            [
                {"$group": {"_id": "$type", "count": {"$sum": 1}, "users": {"$addToSet": "$user_id"}}},
                {"$sort": {"_id": 1}},
            ]
        )
    )
    summary = {r["_id"]: (r["count"], sorted(r["users"], key=str)) for r in rows}
    assert summary == {"signup": (2, [None, "u3"]), "view": (3, ["u1", "u2"])}


def test_temporary_database_drops_only_itself(mongo_client: MongoClient[dict[str, Any]]) -> None:
    # mongo_db is built on temporary_database(), so this checks the fixture's teardown.
    with temporary_database(mongo_client) as keep:
        keep["c"].insert_one({"keep": True})
        with temporary_database(mongo_client) as db:
            db["c"].insert_one({"x": 1})
            assert db.name in mongo_client.list_database_names()
            assert db.name != keep.name
        assert db.name not in mongo_client.list_database_names()
        assert keep.name in mongo_client.list_database_names()
        assert keep["c"].count_documents({}) == 1


@pytest.mark.slow
def test_mongo_daemon_stop_and_restart_on_same_port(mongo_daemon: MongoDaemon) -> None:
    client = mongo_daemon.client(serverSelectionTimeoutMS=500)
    try:
        client["t_daemon"]["c"].insert_one({"n": 1})
        port = mongo_daemon.port

        assert mongo_daemon.stop() == 0  # clean exit on SIGTERM
        assert not mongo_daemon.running
        with pytest.raises(ServerSelectionTimeoutError):
            client.admin.command("ping")

        mongo_daemon.start()
        assert mongo_daemon.port == port
        assert ping(mongo_daemon.url)
        # :memory: storage: a restarted daemon starts empty.
        assert client["t_daemon"]["c"].count_documents({}) == 0
    finally:
        client.close()


@pytest.mark.slow
def test_mongo_daemon_sigkill_is_a_crash(mongo_daemon: MongoDaemon) -> None:
    import signal

    assert mongo_daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    assert mongo_daemon.url and not ping(mongo_daemon.url, timeout_s=0.3)


def test_client_for_adds_direct_connection_only_for_one_host() -> None:
    one = client_for("mongodb://127.0.0.1:1/", connect=False)
    many = client_for("mongodb://127.0.0.1:1,127.0.0.1:2/?replicaSet=rs0", connect=False)
    try:
        assert one.options.direct_connection is True
        assert many.options.direct_connection is not True
    finally:
        one.close()
        many.close()


# -- HTTP ---------------------------------------------------------------------------------


def _get(url: str, **kwargs: Any) -> tuple[int, bytes, http.client.HTTPMessage]:
    request = urllib.request.Request(url, headers=kwargs.pop("headers", {}))
    with urllib.request.urlopen(request, timeout=kwargs.pop("timeout", HTTP_TIMEOUT)) as resp:
        return resp.status, resp.read(), resp.headers


def test_http_bytes_route_and_request_log(http_server: HTTPTestServer) -> None:
    png = b"\x89PNG\r\n\x1a\nnot-really-a-png"
    url = http_server.add_bytes("/img/a.png", png, "image/png")
    assert url == http_server.url("/img/a.png") == f"http://127.0.0.1:{http_server.port}/img/a.png"

    status, body, headers = _get(url + "?w=10", headers={"X-Request-Id": "abc"})

    assert (status, body) == (200, png)
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(png))
    [req] = http_server.requests
    assert (req.method, req.path) == ("GET", "/img/a.png?w=10")
    assert req.headers["x-request-id"] == "abc"
    assert http_server.requests_to("/img/a.png") == [req]


def test_http_unknown_route_is_404(http_server: HTTPTestServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        _get(http_server.url("/nothing"))
    excinfo.value.close()
    assert excinfo.value.code == 404


@pytest.mark.parametrize("status", [301, 302])
def test_http_redirect_is_followed(http_server: HTTPTestServer, status: int) -> None:
    target = http_server.add_bytes("/final.jpg", b"jpeg-bytes", "image/jpeg")
    http_server.add_redirect("/old.jpg", target, status=status)

    with urllib.request.urlopen(http_server.url("/old.jpg"), timeout=HTTP_TIMEOUT) as resp:
        assert resp.url == target
        assert resp.read() == b"jpeg-bytes"
    assert [r.path for r in http_server.requests] == ["/old.jpg", "/final.jpg"]


def test_http_redirect_is_really_a_redirect(http_server: HTTPTestServer) -> None:
    http_server.add_redirect("/moved", "http://example.invalid/x", status=301)
    conn = http.client.HTTPConnection(http_server.host, http_server.port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/moved")
        resp = conn.getresponse()
        assert resp.status == 301
        assert resp.getheader("Location") == "http://example.invalid/x"
        resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("status", [404, 500, 503])
def test_http_status_route(http_server: HTTPTestServer, status: int) -> None:
    http_server.add_status("/broken", status)
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        _get(http_server.url("/broken"))
    excinfo.value.close()
    assert excinfo.value.code == status


def test_http_endless_redirect_loop(http_server: HTTPTestServer) -> None:
    http_server.add_redirect_loop("/loop")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        _get(http_server.url("/loop"))
    excinfo.value.close()
    assert "infinite loop" in str(excinfo.value)
    paths = [r.path for r in http_server.requests]
    # urllib gives up after 10 redirects: the first request plus 10 hops reached the server.
    assert paths[:3] == ["/loop", "/loop?hop=1", "/loop?hop=2"]
    assert len(paths) == urllib.request.HTTPRedirectHandler.max_redirections + 1


def _raw_get(server: HTTPTestServer, path: str) -> tuple[bytes, bytes]:
    """Headers and the complete body as sent until the server closed the connection."""
    with socket.create_connection((server.host, server.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head, body


def test_http_lying_length_sends_more_than_declared(http_server: HTTPTestServer) -> None:
    url = http_server.add_lying_length("/bomb.png", declared=10, actual_bytes=5000, content_type="image/png")

    status, body, headers = _get(url)
    assert (status, headers["Content-Length"], len(body)) == (200, "10", 10)  # urllib trusts the header

    head, raw_body = _raw_get(http_server, "/bomb.png")
    assert b"Content-Length: 10" in head.split(b"\r\n")
    assert len(raw_body) == 5000  # ...but the server really sent all of it


def test_http_lying_length_can_truncate(http_server: HTTPTestServer) -> None:
    url = http_server.add_lying_length("/short.png", declared=1000, actual_bytes=b"abc")
    with (
        urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp,
        pytest.raises(http.client.IncompleteRead) as excinfo,
    ):
        resp.read()
    assert excinfo.value.partial == b"abc"


def test_http_trickle_sends_slowly_but_completely(http_server: HTTPTestServer) -> None:
    url = http_server.add_trickle("/slow.bin", total_bytes=5, interval_s=0.05)
    started = time.monotonic()
    status, body, headers = _get(url)
    elapsed = time.monotonic() - started
    assert (status, body, headers["Content-Length"]) == (200, b"\x00" * 5, "5")
    assert 0.18 <= elapsed < 2.0


def test_http_trickle_trips_a_read_timeout_and_teardown_is_prompt() -> None:
    with running_http_server() as server:
        url = server.add_trickle("/slow.bin", total_bytes=100, interval_s=0.25)  # ~25 s if left alone
        with urllib.request.urlopen(url, timeout=0.1) as resp:
            assert resp.read(1) == b"\x00"
            with pytest.raises(TimeoutError):
                resp.read()
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.0


def test_http_head_request(http_server: HTTPTestServer) -> None:
    url = http_server.add_bytes("/a.gif", b"GIF89a....", "image/gif")
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as resp:
        assert resp.headers["Content-Length"] == "10"
        assert resp.read() == b""
    assert http_server.requests[0].method == "HEAD"


def test_http_route_paths_must_be_absolute(http_server: HTTPTestServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        http_server.add_bytes("relative.png", b"", "image/png")
    with pytest.raises(ValueError):
        http_server.add_trickle("/forever", total_bytes=10_000, interval_s=1.0)
