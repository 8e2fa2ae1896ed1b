"""Signed links in emails: they authenticate the click, so no login is needed.

The unsubscribe token names the request and a hash of the address, not the address
itself, so the link leaks nothing to proxies or logs. Unsubscribe links do not expire:
mail clients offer the one-click unsubscribe on old messages too (RFC 8058).

A resident's sign-in link is different: it must work once and briefly, so it is a random
secret whose hash is a database row (ResidentSignInLink), not a signature.
"""

import hashlib
import secrets

from django.core import signing

UNSUBSCRIBE_SALT = "notifications.unsubscribe"


def address_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:20]


def unsubscribe_token(request_id: int, email: str) -> str:
    return signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object(
        {"r": request_id, "a": address_key(email)}
    )


def read_unsubscribe_token(token: str) -> tuple[int, str]:
    """(request id, address key); raises signing.BadSignature when tampered with."""
    try:
        data = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
        return int(data["r"]), str(data["a"])
    except (KeyError, TypeError, ValueError) as error:
        raise signing.BadSignature(str(error)) from None


def signin_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_signin_token() -> tuple[str, str]:
    """(token for the link, hash to store)."""
    token = secrets.token_urlsafe(32)
    return token, signin_token_hash(token)
