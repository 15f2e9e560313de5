"""Database queries per authentication, for wsserver and the baseline.

Runs each one's own authentication code on the benchmark's tokens under
Django's CaptureQueriesContext, with the sidecar's settings (settings_auth)
on the benchmark database. Prints {"wsserver": q, "baseline": q}.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ["DJANGO_SETTINGS_MODULE"] = "settings_auth"

import django  # noqa: E402

django.setup()

import baseline  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from wsserver.auth import Authenticator  # noqa: E402
from wsserver.config import get_config  # noqa: E402


def queries_per_call(function, tokens) -> float:
    function(tokens[0])  # warm caches, as a running server has them
    with CaptureQueriesContext(connection) as context:
        for token in tokens[1:]:
            assert function(token) is not None
    return len(context.captured_queries) / (len(tokens) - 1)


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    tokens = [entry["token"] for entry in plan[:101]]
    authenticator = Authenticator(get_config().sesame_scope)
    print(
        json.dumps(
            {
                "wsserver": queries_per_call(authenticator.authenticate, tokens),
                "baseline": queries_per_call(
                    lambda t: baseline.authenticate(t)[0], tokens
                ),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
