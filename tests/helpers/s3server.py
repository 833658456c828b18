"""A real S3 API server on 127.0.0.1 for DVC remote tests: moto's server mode (``python -m
moto.server``, the `test` extra) in its own process, with authentication on: the first requests
(``BOOTSTRAP_REQUESTS``) create an IAM user with an S3 policy, its access key and the bucket; every
later request must be signed with that key, so a wrong secret gets S3's ``SignatureDoesNotMatch``.

``S3Server.cut_downloads(after=N)`` makes the server drop every object download after the next N
halfway through its body (the connection closes short of its Content-Length, as when a network or the
server fails mid-transfer) until ``restore_downloads()``: run as ``python s3server.py PORT`` (moto's app
behind ``CutDownloads``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: unauthenticated requests moto allows before it checks signatures: create_user, create_policy,
#: attach_user_policy, create_access_key (bucket creation is then signed with the new key)
BOOTSTRAP_REQUESTS = 4

#: the environment variable naming CutDownloads' flag file
CUT_FLAG_VARIABLE = "KILN_S3_CUT_FLAG"


class CutDownloads:
    """WSGI middleware: while the flag file exists (its text: how many object downloads still go through
    whole), every further object download (a GET of /bucket/key) sends half its body and ends."""

    def __init__(self, app, flag: Path):
        self.app, self.flag, self.lock = app, flag, threading.Lock()

    def _cut(self, environ) -> bool:
        if environ["REQUEST_METHOD"] != "GET" or "/" not in environ.get("PATH_INFO", "").strip("/"):
            return False
        with self.lock:
            if not self.flag.exists():
                return False
            whole = int(self.flag.read_text() or 0)
            if whole > 0:
                self.flag.write_text(str(whole - 1))
            return whole <= 0

    def __call__(self, environ, start_response):
        if not self._cut(environ):
            return self.app(environ, start_response)
        body = b"".join(self.app(environ, start_response))   # the headers keep the full Content-Length
        return [body[:len(body) // 2]]                        # werkzeug then closes the connection


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
    cut_flag: Path

    def cut_downloads(self, after: int) -> None:
        """Let ``after`` more object downloads through whole, then cut every later one halfway."""
        self.cut_flag.write_text(str(after))

    def restore_downloads(self) -> None:
        self.cut_flag.unlink(missing_ok=True)

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
        shutil.rmtree(self.cut_flag.parent, ignore_errors=True)


def start_s3_server(bucket: str = "kiln-builds", log_path=None) -> S3Server:
    import boto3
    import tempfile

    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    cut_flag = Path(tempfile.mkdtemp(prefix="kiln-s3-")) / "cut-downloads"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_REQUESTS), CUT_FLAG_VARIABLE: str(cut_flag)}
    process = subprocess.Popen([sys.executable, __file__, str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
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
    server = S3Server(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"], process, cut_flag)
    server.client().create_bucket(Bucket=bucket)
    return server


def serve(port: int) -> None:
    """moto's server (as ``python -m moto.server -H 127.0.0.1 -p PORT`` runs it) behind CutDownloads."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    app = CutDownloads(DomainDispatcherApplication(create_backend_app), Path(os.environ[CUT_FLAG_VARIABLE]))
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
