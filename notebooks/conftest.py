"""nbval runs these notebooks as tests: give their kernels a history file of their own,
so that the user's history is neither read nor written (tests/conftest.py does the same
for the rest of the suite)."""

import os
import tempfile

os.environ["ONESHOT_NB_DB"] = os.path.join(
    tempfile.mkdtemp(prefix="oneshot-nbval-history-"), "history.sqlite3"
)
