"""SMTP delivery for the outbox: one connection per flush, errors translated once.

`classify()` is the single place where aiosmtplib and socket errors become a SendFailure
that tells the outbox whether to retry (4xx, disconnect, timeout), give up (5xx) or wait
out an outage (the server cannot be reached, TLS or login fails).
"""

from __future__ import annotations

import contextlib
import email.policy
import random
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from mcp_server.settings import SmtpSettings


def retry_delay(
    attempts: int,
    base_s: float = 2.0,
    max_s: float = 300.0,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `attempts`-th failed try: base * 2^(n-1), capped, + jitter."""
    delay = min(base_s * 2 ** max(0, min(attempts, 64) - 1), max_s)
    return delay * (1.0 + jitter * (rng or random).random())


#: SMTP line endings, but lines up to RFC 5322's 998: a Message-ID in References or
#: In-Reply-To (approval ids are long) is never folded into an RFC 2047 encoded word, which
#: mail clients would not recognise as a message id (aiosmtplib's own policy folds at 78).
WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class SendFailure:
    """Why one delivery try failed, and what the outbox should do about it."""

    text: str
    permanent: bool  # never retry (5xx, unsendable address)
    outage: bool  # the server was never reached for this message: wait, never give up


def classify(exc: BaseException, connecting: bool, server: str = "the SMTP server") -> SendFailure:
    """Translate an aiosmtplib / socket error into a SendFailure (the backend's one edge)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        said = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        permanent = bool(codes) and all(code >= 500 for code in codes)
        return SendFailure(f"every recipient was refused ({said})", permanent, outage=False)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        text = f"{server} refused the login ({exc.code} {exc.message}): check "
        return SendFailure(text + "OPSMEDIC_SMTP__USERNAME and PASSWORD", False, outage=True)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        text = f"{server}: {exc}; check OPSMEDIC_SMTP__TLS (none / starttls / tls) and PORT"
        return SendFailure(text, False, outage=True)
    if connecting:
        what = (
            f"{exc.code} {exc.message}"
            if isinstance(exc, aiosmtplib.SMTPResponseException)
            else exc
        )
        text = f"cannot reach {server} ({type(exc).__name__}: {what}); will retry"
        return SendFailure(text, False, outage=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        permanent = 500 <= exc.code < 600
        return SendFailure(f"{server} answered {exc.code} {exc.message}", permanent, outage=False)
    if isinstance(exc, ValueError):
        return SendFailure(f"the message cannot be sent: {exc}", True, outage=False)
    text = f"{server} connection lost during the message ({type(exc).__name__}: {exc})"
    return SendFailure(text, False, outage=False)


class SendFailed(Exception):
    """Raised by SmtpLink.send; carries the classified failure."""

    def __init__(self, failure: SendFailure) -> None:
        super().__init__(failure.text)
        self.failure = failure


_SMTP_ERRORS = (aiosmtplib.SMTPException, OSError, ValueError)


class SmtpLink:
    """One SMTP connection for one flush: opened on first use, reopened after an error.

    When the server cannot be reached, the failure is remembered and every later message
    in the same flush gets it at once instead of waiting out another timeout.
    """

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None) -> None:
        self._settings = settings
        self._tls_context = tls_context
        self._smtp: aiosmtplib.SMTP | None = None
        self.down: SendFailure | None = None
        self.label = f"SMTP server {settings.host}:{settings.port}"

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        password = s.password.get_secret_value() if s.password else ""
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=password if s.username else None,
            timeout=s.timeout_s,
            use_tls=s.tls == "tls",
            start_tls=s.tls == "starttls",  # False for "none": never upgrade on its own
            tls_context=self._tls_context,
        )
        try:
            await smtp.connect()  # also EHLO, STARTTLS and AUTH as configured
        except BaseException:
            smtp.close()  # e.g. connected but the login failed: do not leak the socket
            raise
        return smtp

    async def send(self, mail: EmailMessage, sender: str, recipients: list[str]) -> list[str]:
        """Send one mail; return refusals of single recipients; raise SendFailed otherwise."""
        if self.down is not None:
            raise SendFailed(self.down)
        if self._smtp is None:
            try:
                self._smtp = await self._connect()
            except _SMTP_ERRORS as exc:
                self.down = classify(exc, connecting=True, server=self.label)
                raise SendFailed(self.down) from exc
        try:
            data = mail.as_bytes(policy=WIRE_POLICY)
            refused, _ = await self._smtp.sendmail(sender, recipients, data)
        except _SMTP_ERRORS as exc:
            self.close()  # start the next message on a fresh connection
            raise SendFailed(classify(exc, connecting=False, server=self.label)) from exc
        return [f"{rcpt}: {r.code} {r.message}" for rcpt, r in refused.items()]

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def quit(self) -> None:
        if self._smtp is not None:
            try:  # the mail is already delivered; a rude goodbye changes nothing
                with contextlib.suppress(*_SMTP_ERRORS):
                    await self._smtp.quit()
            finally:
                self.close()
