"""Email over SMTP (STARTTLS, implicit TLS or plain), optional auth, text + HTML alternative."""

from __future__ import annotations

import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from recoverctl.config import EmailChannel, secret_value
from recoverctl.notify.base import DeliveryError, Message, Receipt


def render_html(message: Message) -> str:
    """Return the HTML body: summary, a details table, links."""
    if message.html:
        return message.html
    color = {"critical": "#b00020", "warning": "#b26a00"}.get(message.severity, "#1f5fa8")
    rows = "".join(
        f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in {
            "severity": message.severity,
            "event": message.kind,
            "service/source": message.subject or "-",
            "time": message.when,
            **{k: v for k, v in message.details.items() if k not in ("links", "url", "resolve")},
        }.items()
    )
    links = "".join(f"<li><a href='{html.escape(u)}'>{html.escape(u)}</a></li>" for u in message.links)
    return (
        f"<html><body><h2 style='color:{color}'>{html.escape(message.title)}</h2>"
        f"<p>{html.escape(message.summary)}</p><table>{rows}</table>"
        + (f"<ul>{links}</ul>" if links else "")
        + "</body></html>"
    )


def build(message: Message, sender: str, to: list[str]) -> EmailMessage:
    """Return the MIME message (text/plain with a text/html alternative)."""
    mail = EmailMessage()
    mail["Subject"] = f"{message.title}: {message.summary}"[:200] if not message.text else message.title
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(message.at, localtime=False)
    mail["Message-ID"] = make_msgid(domain="recoverctl")
    mail["X-Recoverctl-Severity"] = message.severity
    mail["X-Recoverctl-Dedup-Key"] = message.incident_key
    mail.set_content(message.body())
    mail.add_alternative(render_html(message), subtype="html")
    return mail


class EmailNotifier:
    type = "email"

    def __init__(self, name: str, cfg: EmailChannel):
        self.name = name
        self.cfg = cfg
        self.password = secret_value(cfg.password, cfg.password_file, f"the SMTP password of '{name}'")

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cfg.ca_file)

    def send(self, message: Message) -> Receipt:
        """Send one mail to all recipients; return the Receipt; raise DeliveryError."""
        cfg = self.cfg
        where = f"SMTP {cfg.host}:{cfg.port} ('{self.name}')"
        mail = build(message, cfg.sender, cfg.to)
        try:
            smtp: smtplib.SMTP
            if cfg.security == "tls":
                smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=self._tls_context())
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with smtp:
                if cfg.security == "starttls":
                    smtp.starttls(context=self._tls_context())
                if cfg.username:
                    smtp.login(cfg.username, self.password or "")
                refused = smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryError(f"{where}: authentication failed ({e.smtp_code})", retryable=False) from None
        except smtplib.SMTPResponseException as e:
            # 4xx replies are temporary by definition; 5xx will not change on retry.
            raise DeliveryError(
                f"{where}: {e.smtp_code} {e.smtp_error!r}", retryable=400 <= e.smtp_code < 500
            ) from None
        except smtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(
                f"{where}: all recipients refused: {sorted(e.recipients)}", retryable=False
            ) from None
        except (smtplib.SMTPException, OSError) as e:
            raise DeliveryError(f"{where}: {type(e).__name__}: {e}", retryable=True) from None
        if refused:
            raise DeliveryError(f"{where}: recipients refused: {sorted(refused)}", retryable=False)
        return Receipt(detail=f"{len(cfg.to)} recipient(s)")

    def close(self) -> None:
        pass
