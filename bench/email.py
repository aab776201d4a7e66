"""E-mails per second to a local SMTP server: one kept connection versus a new connection per e-mail.

    python -m bench email [--emails 500] [--rounds 5]

The server is aiosmtpd (the test suite's, tests/services/smtp.py) in a child
process, so that it does not share the sender's GIL; plain SMTP and STARTTLS
(the test CA, verified). Each measurement sends N prebuilt messages
sequentially from one thread through ``jobs.mail.smtp.SMTPBackend``, to a
fresh server whose connection count is reported back as a check. Rounds
alternate the order of the variants.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Literal

from bench.harness import machine, publish, today
from jobs.mail.addresses import Mailbox
from jobs.mail.message import OutgoingEmail, build_email
from jobs.mail.smtp import SMTPBackend
from jobs.payloads import EmailPayload
from jobs.settings import Settings

Security = Literal["none", "starttls"]
SECURITIES: tuple[Security, ...] = ("none", "starttls")
MODES = ("reuse", "per-email")


def _serve(security: Security, tls_dir: str, ready: Any, stop: Event, report: Any) -> None:
    from tests.services.smtp import make_tls_files, running_smtp_server

    files = make_tls_files(Path(tls_dir)) if security != "none" else None
    with running_smtp_server(security=security, tls_files=files) as server:
        ready.put((server.port, server.cafile))
        stop.wait(600)
        report.put((server.connections, len(server.messages)))


def _emails(count: int) -> list[OutgoingEmail]:
    sender = Mailbox("no-reply@taatom.app", "Taatom")
    html = "<h1>Your Taatom code</h1><p>Use <b>418203</b> within 10 minutes.</p>" * 3
    return [
        build_email(
            EmailPayload.parse({"to": f"user{i}@example.com", "subject": f"Code {i}", "html": html}),
            sender=sender,
            token=f"bench-{i}",
            date=datetime.now(UTC),
        )
        for i in range(count)
    ]


def measure(security: Security, mode: str, emails: list[OutgoingEmail], tls_dir: str) -> tuple[float, int]:
    """E-mails per second for one variant, and the connections the server saw."""
    ctx = mp.get_context("spawn")
    ready, report, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_serve, args=(security, tls_dir, ready, stop, report), daemon=True)
    child.start()
    try:
        port, cafile = ready.get(timeout=60)
        env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": security}
        if cafile:
            env["SMTP_CA_FILE"] = cafile
        backend = SMTPBackend(Settings.from_mapping(env), reuse=mode == "reuse")
        started = time.perf_counter()
        for email in emails:
            backend.send(email)
        elapsed = time.perf_counter() - started
        backend.close()
        stop.set()
        connections, received = report.get(timeout=30)
        if received != len(emails):
            raise RuntimeError(f"server received {received} of {len(emails)} e-mails")
        return len(emails) / elapsed, connections
    finally:
        stop.set()
        child.join(timeout=30)
        if child.is_alive():
            child.kill()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench email")
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    emails = _emails(args.emails)
    rates: dict[tuple[Security, str], list[float]] = {(s, m): [] for s in SECURITIES for m in MODES}
    connections: dict[tuple[Security, str], int] = {}
    with tempfile.TemporaryDirectory() as tls_dir:
        for round_no in range(args.rounds):
            order = [(s, m) for s in SECURITIES for m in MODES]
            for security, mode in order if round_no % 2 == 0 else reversed(order):
                rate, opened = measure(security, mode, emails, tls_dir)
                rates[(security, mode)].append(rate)
                connections[(security, mode)] = opened
                print(f"round {round_no + 1} {security:>8} {mode:>9}: {rate:7.0f}/s, {opened} connections")

    def median(key: tuple[Security, str]) -> float:
        return statistics.median(rates[key])

    rows = "\n".join(
        f"| {s} | {median((s, 'reuse')):.0f} ({connections[(s, 'reuse')]}) "
        f"| {median((s, 'per-email')):.0f} ({connections[(s, 'per-email')]}) "
        f"| **{median((s, 'reuse')) / median((s, 'per-email')):.1f}x** "
        f"| {1000 / median((s, 'reuse')):.2f}, {1000 / median((s, 'per-email')):.2f} |"
        for s in SECURITIES
    )
    spreads = "\n".join(
        f"- {s} {m}: " + ", ".join(f"{r:.0f}" for r in rates[(s, m)]) for s in SECURITIES for m in MODES
    )
    text = f"""# E-mail sending: connection reuse versus a connection per e-mail

- date: {today()}; machine: {machine()}
- command: `python -m bench email --emails {args.emails} --rounds {args.rounds}`
- server: aiosmtpd (tests/services/smtp.py) in a child process on 127.0.0.1; STARTTLS with the test CA,
  certificate verified; the sender is `jobs.mail.smtp.SMTPBackend` on one thread, {args.emails}
  prebuilt HTML e-mails (text part derived) per measurement, a fresh server each time
- `reuse`: the worker thread's connection kept across e-mails (what jobs do);
  `per-email`: connect (+ STARTTLS) and QUIT around every e-mail

| security | reuse: e-mails/s (conns) | per-email: e-mails/s (conns) | ratio | ms/e-mail (reuse, per-email) |
|---|---|---|---|---|
{rows}

Medians of {args.rounds} rounds, variants alternating; every round:

{spreads}

On loopback the handshake is nearly free of network latency; against a remote server each new
connection adds several round trips (greeting, EHLO, STARTTLS, EHLO again, AUTH), so the gap grows
with the distance to the server. The machine is shared with other work: compare the rounds, not
only the medians.
"""
    publish("email", text)
    return 0
