"""What the history never stores in clear: values of secret-looking env names, and the
password of a `scheme://user:password@host` URL wherever it appears (env values, the
command line, the task's name and error).

A name is split into parts (on anything but letters and digits, and between a lower-case
letter and an upper-case one), and a whole part decides: KEY is a secret, KEYBOARD is not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "<redacted>"

# A part that is exactly one of these makes the name secret. SESSION and SIGNATURE are
# left out on purpose: XDG_SESSION_ID and AWS_SIGNATURE_VERSION are not secrets, and
# AWS_SESSION_TOKEN is caught by TOKEN anyway.
SECRET_PARTS = frozenset(
    {
        "PASS", "PASSWORD", "PASSWD", "PASSPHRASE", "PGPASS", "SECRET", "SECRETS",
        "TOKEN", "TOKENS", "KEY", "KEYS", "APIKEY", "PAT", "DSN", "JWT", "CREDENTIAL",
        "CREDENTIALS", "CREDS", "AUTH", "COOKIE", "COOKIES", "PRIVATE", "SALT", "OTP",
    }
)
# A part that ends with one of these is secret too (PGPASSWORD, HFTOKEN, MYAPIKEY): no
# ordinary word ends so. KEY, PASS and AUTH must stand alone: MONKEY, BYPASS, OAUTH.
SECRET_ENDINGS = (
    "PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "APIKEY", "ACCESSKEY",
    "SECRETKEY", "PRIVATEKEY",
)
# PWD alone is the working directory (and OLDPWD the previous one); as a part of a
# longer name (MYSQL_PWD, DB_PWD) it is a password.
PWD = "PWD"
# A name whose last part is one of these holds where a secret is kept (SSH_AUTH_SOCK,
# TOKEN_FILE), not the secret: a rerun needs it, and it tells nobody anything.
LOCATION_PARTS = frozenset({"FILE", "PATH", "DIR", "SOCK"})

_PARTS = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# scheme://user:password@ with an empty or any user; the password may hold "@" or ":"
# (a greedy match ends at the last "@" before the host), never a space, a quote or
# the "/", "?" or "#" that end the authority.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*:)(?P<password>[^\s/?#'\"]+)@"
)


def is_secret_name(name: str) -> bool:
    """Whether the value of env variable `name` is kept out of the history."""
    parts = [part.upper() for part in _PARTS.split(name) if part]
    if not parts or parts[-1] in LOCATION_PARTS:
        return False
    if len(parts) > 1 and PWD in parts:
        return True
    return any(part in SECRET_PARTS or part.endswith(SECRET_ENDINGS) for part in parts)


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it replaced by REDACTED."""
    if "://" not in text:  # the common case, without running the pattern
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """Env overrides as stored: the values of secret-looking names replaced, and the
    passwords of URLs in the other values."""
    return {k: (REDACTED if is_secret_name(k) else redact_text(v)) for k, v in env.items()}


def was_redacted(text: str) -> bool:
    """Whether a stored value (or command) lost something to redaction."""
    return REDACTED in text
