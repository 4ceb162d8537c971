"""Secrets as environment variables, as in the seed's `using_secrets.py`.

Store the secrets once (the CLI prompts for each value without echo):

    sesame create secret --project my_project --domain development my_secret
    sesame create secret --project my_project --domain development my_union_api_key

Run a task in the cluster (the CLI waits, streams the log and exits with the task's exit code):

    sesame run --remote --project my_project --domain development examples/using_secrets.py t1
    sesame run --remote --project my_project --domain development examples/using_secrets.py t2 --calls 3

or here, with the values in this environment, exactly where the SDK finds them in a pod:

    SESAME_SECRET_MY_SECRET=... sesame run examples/using_secrets.py t1
    UNION_API_KEY=... sesame run examples/using_secrets.py t2 --calls 3
"""

import os

import sesame


@sesame.task(secret_requests=[sesame.Secret(key="my_secret")])
def t1() -> None:
    """The default delivery: env var SESAME_SECRET_MY_SECRET, read through the SDK."""
    secret_value = sesame.current_context().secrets.get(key="my_secret")
    # Use it here, e.g. to call an external API. Never print it: if you do, Sesame masks it.
    print(f"t1 read my_secret ({len(secret_value)} characters); printed by mistake it reads {secret_value}")


@sesame.task(secret_requests=[sesame.Secret(key="my_union_api_key", env_var="UNION_API_KEY")])
def t2(calls: int = 1) -> int:
    """A custom env_var: the value is in UNION_API_KEY, where a library expects it."""
    api_key = os.environ["UNION_API_KEY"]
    assert api_key == sesame.current_context().secrets.get(key="my_union_api_key")
    print(f"t2 would call the API {calls} time(s) with UNION_API_KEY set")
    return calls
