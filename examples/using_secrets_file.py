"""Secrets as files, as in the seed's FILE example.

Store the secrets once, from files (byte for byte):

    sesame create secret --project my_project --domain development my_file_secret -f ./secret.txt
    sesame create secret --project my_project --domain development gcp_sa -f ./sa.json

Run the task in the cluster, or here with the files in $SESAME_SECRETS_DIR (default /etc/sesame/secrets):

    sesame run --remote --project my_project --domain development examples/using_secrets_file.py t1
    SESAME_SECRETS_DIR=./my-secrets sesame run examples/using_secrets_file.py t1
"""

import json
import os

import sesame


@sesame.task(
    secret_requests=[
        sesame.Secret(key="my_file_secret", mount_requirement=sesame.Secret.MountType.FILE),
        # FILE + env_var: the variable holds the file's path, where Google's libraries look for it.
        sesame.Secret(
            key="gcp_sa",
            mount_requirement=sesame.Secret.MountType.FILE,
            env_var="GOOGLE_APPLICATION_CREDENTIALS",
        ),
    ]
)
def t1() -> str:
    """Reads one file secret through the SDK and one through the path its env var names."""
    path_to_secret_file = sesame.current_context().secrets.get_secrets_file("my_file_secret")
    with open(path_to_secret_file) as secret_file:
        secret_value = secret_file.read()
    print(f"t1 read {path_to_secret_file} ({len(secret_value)} characters)")
    with open(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]) as credentials:
        account = json.load(credentials)
    print(f"t1 found a {account['type']} credential at {os.environ['GOOGLE_APPLICATION_CREDENTIALS']}")
    return str(account["type"])
