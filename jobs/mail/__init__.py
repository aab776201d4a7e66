"""The e-mail job (``send_email`` on the ``email`` queue): see docs/email.md.

Modules: ``addresses`` (parsing and validating mailboxes), ``message``
(building the MIME message), ``html_text`` (the plain-text part of an
HTML-only e-mail), ``smtp`` and ``outbox`` (the two backends),
``idempotency`` (the ``email_log`` collection), ``job`` (the job function).
This package imports nothing heavy: ``jobs.payloads`` uses ``addresses``.
"""
