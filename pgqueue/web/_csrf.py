"""CSRF protection for the dashboard's actions: a signed double-submit token, pure.

The browser holds a random nonce in a cookie (HttpOnly, SameSite=Strict, scoped to the
dashboard's path); every form carries the token `HMAC(secret, nonce)`. A POST is accepted
only when the form's token is the HMAC of the cookie it came with. Another site can make the
browser send the cookie but can neither read it nor compute its HMAC without the server's
secret, and a cookie planted from a sibling subdomain comes with no valid token. Written
with `hmac` and `secrets` so the extra needs no session middleware.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "pgqueue_csrf"
FIELD = "csrf_token"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def token_for(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, b"pgqueue-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def valid(secret: bytes, nonce: str | None, token: str | None) -> bool:
    """Whether `token` (from the form) is the signature of `nonce` (from the cookie)."""
    if not nonce or not token or len(nonce) > 128:
        return False
    return hmac.compare_digest(token_for(secret, nonce), token)
