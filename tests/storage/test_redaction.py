"""What the history keeps out: values of secret-looking env names (by whole name parts),
passwords in URLs wherever they appear, and a rerun that says what it cannot restore."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from helpers import eventually, query, stored_orchestrator
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import oneshot_nb.notebook.magics as magics_module
from oneshot_nb import OneshotTask, TaskState
from oneshot_nb.engine.options import default_name
from oneshot_nb.notebook.magics import OneshotMagics, load
from oneshot_nb.storage import records
from oneshot_nb.storage.records import get_record
from oneshot_nb.storage.redaction import REDACTED, is_secret_name, redact, redact_text

pytestmark = pytest.mark.timeout(30)

SECRET_NAMES = [
    "PASS", "PGPASSWORD", "PGPASS", "DB_PASSWD", "MYSQL_PWD", "GITHUB_PAT", "SENTRY_DSN",
    "JWT", "API_KEY", "APIKEY", "OPENAI_API_KEY", "apiKey", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "HF_TOKEN", "HFTOKEN", "GPG_PASSPHRASE", "CREDENTIALS", "NPM_AUTH",
    "SESSION_COOKIE", "SSH_PRIVATE_KEY", "my_auth", "client-secret",
    # a digit or a plural glued on
    "PASSWORD2", "DB_PASSWORD1", "GITHUB_TOKEN2", "SECRET1", "APIKEY2", "PAT2",
    "PASSPHRASE2", "PASSWORDS", "MYSQL_PWD2", "PGPASSWORD10", "apiKey2", "HF_TOKENS",
]
ORDINARY_NAMES = [
    "KEYBOARD_LAYOUT", "MONKEY", "AUTHOR", "GIT_AUTHOR_NAME", "PWD", "OLDPWD", "PATH",
    "TOKENIZERS_PARALLELISM", "PASSENGER_COUNT", "PROXY_BYPASS", "XDG_SESSION_ID",
    "SSH_AUTH_SOCK", "PGPASSFILE", "TOKEN_FILE", "DATABASE_URL", "OAUTH_CLIENT_ID",
    "CUDA_VISIBLE_DEVICES", "KEYBOARDS", "ADDRESS", "PROCESS", "STATUS", "X509_CERT",
    "TOKEN_FILES", "PWD2", "PASSES",
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


# -- %oneshot_rerun of a task whose env was redacted ----------------------------------------


@pytest.fixture
def magics(ip, tmp_path, monkeypatch) -> Iterator[OneshotMagics]:
    monkeypatch.setenv("ONESHOT_NB_DB", str(tmp_path / "history.sqlite3"))
    monkeypatch.setattr(records, "active_store", None)
    loaded = load(ip)
    loaded.grace = 0.5
    yield loaded
    loaded._at_exit()
    magics_module._loaded.pop(ip, None)


def run(ip: InteractiveShell, magic: str, line: str) -> OneshotTask:
    task = ip.run_line_magic(magic, "--quiet " + line)
    eventually(lambda: task.done)
    return task


PRINT_ENV = "echo ${API_TOKEN:-none} ${DATABASE_URL:-none} $MODE"


def test_rerun_refuses_naming_the_values_it_cannot_restore(ip, magics, monkeypatch):
    """A rerun left redacted values out silently, so the task ran with whatever the
    kernel had, or nothing. Now it refuses in one line naming them, and runs nothing."""
    monkeypatch.setenv("API_TOKEN", "kernel-token")
    first = run(
        ip, "oneshot",
        "--env API_TOKEN=t0k --env DATABASE_URL=pg://u:pw@h/d --env MODE=fast "
        + PRINT_ENV,
    )
    assert first.output == "t0k pg://u:pw@h/d fast\n"
    before = list(magics.orchestrator.tasks)
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("oneshot_rerun", f"--quiet {first.id}")
    assert str(refused.value) == (
        f"cannot rerun task {first.id}: the values of API_TOKEN, DATABASE_URL were not saved;"
        " --env-from-kernel takes the kernel's"
    )
    assert list(magics.orchestrator.tasks) == before


def test_rerun_with_env_from_kernel_takes_the_kernels_values_now(ip, magics, monkeypatch):
    """--env-from-kernel runs with the kernel's current values for what was not saved,
    the stored values for the rest; the rerun's own record is redacted again, so its
    rerun asks again."""
    monkeypatch.setenv("API_TOKEN", "kernel-token")
    monkeypatch.setenv("DATABASE_URL", "pg://kernel@h/d")
    first = run(
        ip, "oneshot",
        "--env API_TOKEN=t0k --env DATABASE_URL=pg://u:pw@h/d --env MODE=fast "
        + PRINT_ENV,
    )
    rerun = run(ip, "oneshot_rerun", f"--env-from-kernel {first.id}")
    assert rerun.state is TaskState.COMPLETED
    assert rerun.output == "kernel-token pg://kernel@h/d fast\n"
    assert get_record(rerun.id).redacted_env == ["API_TOKEN"]
    with pytest.raises(UsageError, match="the values of API_TOKEN were not saved"):
        ip.run_line_magic("oneshot_rerun", rerun.id)


def test_rerun_with_env_from_kernel_refuses_when_the_kernel_has_no_value(
    ip, magics, monkeypatch
):
    """Asked to take a value from the kernel that the kernel does not have, the rerun
    refuses rather than run without it."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    first = run(ip, "oneshot", f"--env API_TOKEN=t0k {PRINT_ENV}")
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("oneshot_rerun", f"--env-from-kernel {first.id}")
    assert str(refused.value) == (
        f"cannot rerun task {first.id}: the values of API_TOKEN were not saved, and the"
        " kernel has none"
    )


def test_rerun_refuses_a_command_that_lost_a_password(ip, magics):
    """A command whose URL password was redacted would run with "<redacted>" as the
    password: the rerun refuses in one line instead, whatever the options."""
    first = run(ip, "oneshot", "echo postgres://u:hunter2@h/d")
    for options in ("", "--env-from-kernel "):
        with pytest.raises(UsageError) as refused:
            ip.run_line_magic("oneshot_rerun", f"{options}{first.id}")
        assert str(refused.value) == (
            f"cannot rerun task {first.id}: its command held a password in a URL, which"
            " was not saved; run it again with %oneshot"
        )


def test_rerun_of_a_task_without_secrets_needs_no_option(ip, magics):
    """Nothing redacted: the rerun runs as before, no option needed."""
    first = run(ip, "oneshot", "--env MODE=fast echo $MODE")
    rerun = run(ip, "oneshot_rerun", first.id)
    assert (rerun.state, rerun.output) == (TaskState.COMPLETED, "fast\n")
    assert rerun.env == {"MODE": "fast"}


@pytest.mark.parametrize(
    "line",
    [
        "--env NOTE=<redacted> echo $NOTE",
        "printf '%s\\n' 's/x/<redacted>/'",
    ],
    ids=["an env value", "the command"],
)
def test_a_literal_redacted_marker_is_not_taken_for_a_redaction(ip, magics, line):
    """A value or command holding the text "<redacted>" of its own was taken for one
    that lost a secret: the rerun was refused ("values of NOTE were not saved", "its
    command held a password in a URL"). What was redacted is now recorded when the task
    is stored, so the rerun runs the same thing."""
    first = run(ip, "oneshot", line)
    assert first.state is TaskState.COMPLETED
    record = get_record(first.id)
    assert (record.redacted_env, record.command_redacted) == ([], False)
    rerun = run(ip, "oneshot_rerun", first.id)
    assert (rerun.state, rerun.output) == (TaskState.COMPLETED, first.output)
    assert "<redacted>" in rerun.output
