"""Encrypted job arguments: OTP codes and reset links are not readable in Redis.

With a key configured, the arguments an actor declares sensitive (and any
argument whose name says it is a secret) are taken out of the message's
keyword arguments before it is stored and sealed into one authenticated
Fernet token in the ``sealed`` option. Only a worker opens it, right before
the job runs. Key rotation: the first key seals, every listed key opens.

A message that cannot be opened fails with ``VAL_2002`` (dead-lettered, not
retried); the worker carries on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from .errors import VAL_2002, MessageRejected
from .sanitize import add_job_secrets, is_secret_key
from .secrets_scope import sensitive_args_of

SEALED = "sealed"


def build_keyring(keys: Sequence[str]) -> MultiFernet:
    """A keyring from Fernet keys, the sealing key first; raises ValueError naming a bad one by position."""
    fernets = []
    for position, key in enumerate(keys):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            raise ValueError(f"encryption key #{position + 1} is not a valid Fernet key") from None
    if not fernets:
        raise ValueError("at least one encryption key is required")
    return MultiFernet(fernets)


class ArgumentEncryption(Middleware):
    def __init__(self, keyring: MultiFernet | None) -> None:
        self.keyring = keyring

    def _secret_names(self, broker: Broker, message: Message[Any] | MessageProxy) -> list[str]:
        sensitive = sensitive_args_of(broker, message.actor_name)
        return [k for k in message.kwargs if k in sensitive or is_secret_key(k)]

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if self.keyring is None:
            return
        names = self._secret_names(broker, message)
        if not names:
            return
        # The kwargs dict is shared with the caller's copy of the message; the
        # values leave it here and live on only inside the token.
        secret = {name: message.kwargs.pop(name) for name in names}
        message.options[SEALED] = self.keyring.encrypt(json.dumps(secret).encode()).decode()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        token = message.options.get(SEALED)
        if token is None:
            return
        if self.keyring is None:
            raise MessageRejected(
                VAL_2002, "the message carries encrypted arguments but no JOBS_ENCRYPTION_KEY is set"
            )
        try:
            opened = json.loads(self.keyring.decrypt(str(token).encode()))
        except (InvalidToken, ValueError, TypeError):
            raise MessageRejected(
                VAL_2002, "encrypted arguments could not be opened with any configured key"
            ) from None
        if not isinstance(opened, dict):
            raise MessageRejected(VAL_2002, "encrypted arguments are not a JSON object")
        add_job_secrets(opened.values())
        message.kwargs.update(opened)

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        # The dead-lettered copy keeps the sealed token, never the opened values.
        if SEALED in message.options:
            for name in self._secret_names(broker, message):
                message.kwargs.pop(name, None)
