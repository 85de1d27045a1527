"""Auth tokens, as etcd's `--auth-token simple` and `--auth-token jwt,...` give them.

A token names a user and the auth revision at which their password was checked. Both kinds
are checked by the gateway alone, without asking the other members:

- simple (etcd's default): an opaque string, signed with HMAC-SHA256 under the secret drawn
  when auth was last enabled (it is in the replicated auth store, so every member accepts a
  token any member gave, as etcd's simple tokens do, and disabling auth voids them all). As
  etcd's, a token lapses after `--auth-token-ttl` seconds without use on this member.
- jwt: etcd's claims ("username", "revision", "exp"), signed with the configured key pair.

A token older than a later change of users or roles still verifies here; the store then
refuses it with "revision of auth store is old" (store/auth.py), and clients log in again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt
import msgpack

from petcd.rpc.config import ConfigError, parse_duration_ms

# Tokens this gateway remembers using; past it the least recently used are forgotten (they
# then lapse as if unused: a client logs in again).
MAX_REMEMBERED_TOKENS = 100_000
_JWT_METHODS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class TokenSpecError(ValueError):
    """A bad --auth-token value; the message is the line the user sees."""


class SimpleTokens:
    def __init__(self, ttl_s: int) -> None:
        self._ttl_s = ttl_s
        self._last_used: OrderedDict[str, float] = OrderedDict()  # token -> time.monotonic() of last use

    def mint(self, secret: bytes, user: str, auth_revision: int) -> str:
        body = msgpack.packb([user, auth_revision, time.time(), os.urandom(8)])
        token = _b64(body) + "." + _b64(_mac(secret, body))
        self._touch(token)
        return token

    def verify(self, secret: bytes, token: str) -> tuple[str, int] | None:
        """(user, auth revision), or None for a token that is forged, malformed or lapsed."""
        body_text, _, mac_text = token.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
            user, auth_revision, issued_unix_s, _ = msgpack.unpackb(body)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if not secret or not hmac.compare_digest(mac, _mac(secret, body)):
            return None
        now = time.monotonic()
        last_used = self._last_used.get(token)
        if last_used is None:  # given by another member (or forgotten): its age is its issue time's
            if time.time() - issued_unix_s > self._ttl_s:
                return None
        elif now - last_used > self._ttl_s:
            del self._last_used[token]
            return None
        self._touch(token)
        return user, auth_revision

    def _touch(self, token: str) -> None:
        self._last_used[token] = time.monotonic()
        self._last_used.move_to_end(token)
        while len(self._last_used) > MAX_REMEMBERED_TOKENS:
            self._last_used.popitem(last=False)


@dataclass(slots=True)
class JwtTokens:
    sign_method: str
    private_key: bytes | None
    public_key: bytes
    ttl_s: int

    def mint(self, secret: bytes, user: str, auth_revision: int) -> str:
        if self.private_key is None:
            raise TokenSpecError("jwt: no private key (priv-key) to sign tokens with")
        claims = {"username": user, "revision": auth_revision, "exp": int(time.time()) + self.ttl_s}
        return jwt.encode(claims, self.private_key, algorithm=self.sign_method)

    def verify(self, secret: bytes, token: str) -> tuple[str, int] | None:
        try:
            claims = jwt.decode(token, self.public_key, algorithms=[self.sign_method])
        except jwt.PyJWTError:
            return None
        user, revision = claims.get("username"), claims.get("revision")
        if not isinstance(user, str) or not isinstance(revision, int):
            return None
        return user, revision


def token_provider(spec: str, simple_ttl_s: int) -> SimpleTokens | JwtTokens:
    """The provider for an --auth-token value (etcd's NewTokenProvider)."""
    kind, _, rest = spec.partition(",")
    if kind == "simple":
        return SimpleTokens(simple_ttl_s)
    if kind != "jwt":
        raise TokenSpecError(f'unknown token type "{kind}"')
    options = {}
    for item in filter(None, rest.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise TokenSpecError(f"jwt: invalid option {item!r} in --auth-token")
        options[name] = value
    method = options.get("sign-method", "")
    if method not in _JWT_METHODS:
        raise TokenSpecError(f"jwt: unsupported or missing sign-method {method!r} (petcd signs with {', '.join(_JWT_METHODS)})")
    try:
        public_key = _read(options["pub-key"])
        private_key = _read(options["priv-key"]) if options.get("priv-key") else None
    except KeyError:
        raise TokenSpecError("jwt: pub-key is required in --auth-token") from None
    return JwtTokens(method, private_key, public_key, _ttl_s(options.get("ttl", "5m")))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TokenSpecError(f"jwt: cannot read key file {path}: {e.strerror}") from None


def _ttl_s(text: str) -> int:
    try:
        return max(1, parse_duration_ms(text) // 1000)
    except ConfigError as e:
        raise TokenSpecError(f"jwt: bad ttl {text!r}: {e}") from None


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
