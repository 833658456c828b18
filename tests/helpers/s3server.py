"""A real S3 API server on 127.0.0.1 for DVC remote tests: moto's server mode (``python -m
moto.server``, the `test` extra) in its own process, with authentication on: the first requests
(``BOOTSTRAP_REQUESTS``) create an IAM user with an S3 policy, its access key and the bucket; every
later request must be signed with that key, so a wrong secret gets S3's ``SignatureDoesNotMatch``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

#: unauthenticated requests moto allows before it checks signatures: create_user, create_policy,
#: attach_user_policy, create_access_key (bucket creation is then signed with the new key)
BOOTSTRAP_REQUESTS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def objects(self) -> dict[str, int]:
        """Every object in the bucket: key -> size in bytes."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_s3_server(bucket: str = "kiln-builds", log_path=None) -> S3Server:
    import boto3

    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_REQUESTS)}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto server did not start on port {port} (exit {process.poll()})")
            time.sleep(0.2)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="kiln")
    policy = iam.create_policy(PolicyName="kiln-s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    iam.attach_user_policy(UserName="kiln", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="kiln")["AccessKey"]
    server = S3Server(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"], process)
    server.client().create_bucket(Bucket=bucket)
    return server
