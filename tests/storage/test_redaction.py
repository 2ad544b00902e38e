"""What the history keeps out: values of secret-looking env names (by whole name parts),
and passwords in URLs wherever they appear. A rerun that says what it cannot restore
is in notebook/test_rerun_redacted.py."""

from __future__ import annotations

import json

import pytest
from helpers import query, stored_orchestrator

from oneshot_nb import TaskState
from oneshot_nb.engine.options import default_name
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.redaction import REDACTED, is_secret_name, redact, redact_text

pytestmark = pytest.mark.timeout(30)

SECRET_NAMES = [
    "PASS",
    "PGPASSWORD",
    "PGPASS",
    "DB_PASSWD",
    "MYSQL_PWD",
    "GITHUB_PAT",
    "SENTRY_DSN",
    "JWT",
    "API_KEY",
    "APIKEY",
    "OPENAI_API_KEY",
    "apiKey",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "HF_TOKEN",
    "HFTOKEN",
    "GPG_PASSPHRASE",
    "CREDENTIALS",
    "NPM_AUTH",
    "SESSION_COOKIE",
    "SSH_PRIVATE_KEY",
    "my_auth",
    "client-secret",
    # a digit or a plural glued on
    "PASSWORD2",
    "DB_PASSWORD1",
    "GITHUB_TOKEN2",
    "SECRET1",
    "APIKEY2",
    "PAT2",
    "PASSPHRASE2",
    "PASSWORDS",
    "MYSQL_PWD2",
    "PGPASSWORD10",
    "apiKey2",
    "HF_TOKENS",
]
ORDINARY_NAMES = [
    "KEYBOARD_LAYOUT",
    "MONKEY",
    "AUTHOR",
    "GIT_AUTHOR_NAME",
    "PWD",
    "OLDPWD",
    "PATH",
    "TOKENIZERS_PARALLELISM",
    "PASSENGER_COUNT",
    "PROXY_BYPASS",
    "XDG_SESSION_ID",
    "SSH_AUTH_SOCK",
    "PGPASSFILE",
    "TOKEN_FILE",
    "DATABASE_URL",
    "OAUTH_CLIENT_ID",
    "CUDA_VISIBLE_DEVICES",
    "KEYBOARDS",
    "ADDRESS",
    "PROCESS",
    "STATUS",
    "X509_CERT",
    "TOKEN_FILES",
    "PWD2",
    "PASSES",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_names_with_a_secret_part_are_redacted(name):
    """PGPASS, GITHUB_PAT, SENTRY_DSN, JWT... were stored in clear: a whole part of the
    name (split on _, - and camelCase) that names a secret, or ends a joined word with
    one (PGPASSWORD), redacts the value."""
    assert is_secret_name(name)
    assert redact({name: "s3cret"}) == {name: REDACTED}


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_names_that_only_contain_a_secret_word_are_kept(name):
    """KEYBOARD_LAYOUT, MONKEY and AUTHOR were redacted for holding KEY or AUTH: a part
    must be the secret word, PWD alone is the working directory, and a name ending in
    FILE, PATH, DIR or SOCK says where a secret is, not what."""
    assert not is_secret_name(name)
    assert redact({name: "value"}) == {name: "value"}


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("postgres://app:hunter2@db:5432/main", f"postgres://app:{REDACTED}@db:5432/main"),
        ("redis://:hunter2@cache/0", f"redis://:{REDACTED}@cache/0"),
        ("https://u:p@ss:w0rd@host/x?q=1", f"https://u:{REDACTED}@host/x?q=1"),
        (
            "psql postgres://a:b@h/d 'mysql://c:d@h2' x@y.z",
            f"psql postgres://a:{REDACTED}@h/d 'mysql://c:{REDACTED}@h2' x@y.z",
        ),
        ("https://example.com/a@b:c", "https://example.com/a@b:c"),
        ("ssh://git@github.com/org/repo", "ssh://git@github.com/org/repo"),
        (
            "git clone https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r",
            f"git clone https://{REDACTED}@github.com/o/r",
        ),
        ("https://first.last@host/x", "https://first.last@host/x"),
        ("https://deploy_user_for_production@host", "https://deploy_user_for_production@host"),
        ("no url here: user:pass@host", "no url here: user:pass@host"),
    ],
)
def test_passwords_in_urls_are_redacted_and_nothing_else(text, stored):
    """The password of scheme://user:password@host is replaced (the user, host and the
    rest are kept), and so is a user name that is a token (20 or more letters, digits,
    "_" or "-", with a letter and a digit: https://ghp_...@github.com was stored in
    clear); text without either is left as it is."""
    assert redact_text(text) == stored
    assert redact({"DATABASE_URL": text}) == {"DATABASE_URL": stored}


@pytest.mark.anyio
async def test_no_password_reaches_the_file_from_env_command_argv_or_name(tmp_path):
    """A password in a URL was stored in clear in the command line, the argv and the
    default name (the command), and in env values whose name looks ordinary."""
    path = tmp_path / "history.sqlite3"
    # Long enough that the default name (the command cut at 40 characters) ends inside
    # the password, where no URL pattern can see it.
    url = "postgres://app:hunter2hunter2hunter2@localhost:1/main"
    env = {"DATABASE_URL": url, "PGPASSWORD": "pg-s3cret", "GITHUB_PAT": "ghp_s3cret"}
    async with stored_orchestrator(path) as (orch, _):
        # Commands that do not print it: the log is stored as written, byte for byte.
        shell = orch.submit(f"test -n {url}", env=env)
        argv = orch.submit(["test", "-n", url], name=f"connect {url}")
        for task in (shell, argv):
            assert await task.wait() is TaskState.COMPLETED
    redacted_url = f"postgres://app:{REDACTED}@localhost:1/main"
    assert shell.name.startswith("test -n postgres://app:hunter2")
    assert query(path, "SELECT command, name, env FROM tasks WHERE id = ?", shell.id) == [
        (
            f"test -n {redacted_url}",
            default_name(f"test -n {redacted_url}"),
            json.dumps(
                {"DATABASE_URL": redacted_url, "PGPASSWORD": REDACTED, "GITHUB_PAT": REDACTED}
            ),
        )
    ]
    record = get_record(argv.id, path=str(path))
    assert record.command == ["test", "-n", redacted_url]
    assert record.name == f"connect {redacted_url}"
    assert record.command_redacted
    for file in tmp_path.glob("history.sqlite3*"):
        for secret in (b"hunter", b"pg-s3cret", b"ghp_s3cret"):
            assert secret not in file.read_bytes()
