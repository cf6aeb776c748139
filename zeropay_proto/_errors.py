"""The core's exceptions.

Following h11 (``h11/_util.py``): exceptions are reserved for protocol *violations*.
Decisions a client can legitimately provoke (a wrong factor, a throttle, a lockout) are
outputs, never exceptions.

- :class:`RemoteProtocolError`: the peer sent something malformed. It carries
  ``error_status_hint`` (the HTTP status a driver should answer with), a machine-readable
  ``code`` and, when one field is at fault, that field's name. Its message never quotes the
  offending value, so it is safe to log and to return to the client.
- :class:`LocalProtocolError`: the driver misused the core (wrong entropy length, a transition
  that does not exist). This is a bug in the caller.
- :class:`IntegrityError`: stored ciphertext failed authentication or names an unknown key.
  Storage was tampered with or is corrupt; the driver must fail closed.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every exception the core raises on purpose."""


class LocalProtocolError(ProtocolError):
    """The caller used the core in a way its contract forbids."""


class IntegrityError(ProtocolError):
    """Sealed or wrapped data did not authenticate; nothing was decrypted."""


class RemoteProtocolError(ProtocolError):
    """The client's input is invalid.

    ``error_status_hint`` is 400 unless stated (413 for an oversized body);
    ``code`` is a stable upper-case identifier; ``field`` names the offending input field
    (dotted for nested fields, e.g. ``factors.PIN``) or is ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "INVALID_INPUT",
        field: str | None = None,
        error_status_hint: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.error_status_hint = error_status_hint
