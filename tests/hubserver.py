"""A local stand-in for the Hugging Face Hub's HTTP API: just the endpoints ``huggingface_hub`` 2.4
calls to download a file at a commit and to create a repo and commit files to it (with
``HF_HUB_DISABLE_XET=1``: LFS basic transfer). Tests point ``HF_ENDPOINT`` at it, so kiln's real
download and upload code runs against it.

Download: ``HEAD``/``GET /<repo>/resolve/<revision>/<path>`` answer with ``X-Repo-Commit``, ``ETag``
(sha256 for LFS files, the git blob sha1 for regular ones, as the Hub does), ``Content-Length`` and
``Accept-Ranges``; a ``Range: bytes=N-`` GET answers 206 with the rest. ``cut_after`` makes the next
GET of a file stop after that many bytes (a dropped connection); ``drop`` names the requests (``HEAD``,
``GET``) whose connection is closed before any answer (a server that drops every connection);
``etags`` replaces the ETag the server answers for a path (a hostile or broken server).

Upload: ``POST /api/repos/create``, ``POST /api/validate-yaml`` (the model card's metadata), ``POST /api/models/<repo>/preupload/<rev>`` (binary or large
files -> ``lfs``), ``POST /<repo>.git/info/lfs/objects/batch`` (basic transfer), ``PUT`` of the LFS
object, ``POST /api/models/<repo>/commit/<rev>`` (NDJSON: header, file, lfsFile).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return len(data) > 10_000 or b"\0" in data[:1024] or path.endswith((".bin", ".pt", ".nemo", ".pth"))


@dataclass
class Repo:
    commits: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)        # at the head commit
    at: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    private: bool = False


class FakeHub:
    def __init__(self, token: str | None = None):
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, dict]] = []   # (method, path, selected headers)
        self.cut_after: dict[str, int] = {}                # path -> bytes before the next GET drops
        self.drop: set[str] = set()                         # methods whose connections close unanswered
        self.etags: dict[str, str] = {}                     # path -> the ETag answered instead
        self.token = token
        self.card_metadata: list[dict] = []                 # model card front matter validated
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- repository state ------------------------------------------------------------------------
    def commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        repo = self.repos.setdefault(repo_id, Repo())
        repo.files = {**repo.files, **files}
        oid = hashlib.sha1(json.dumps([repo_id, len(repo.commits), sorted(
            (p, hashlib.sha256(d).hexdigest()) for p, d in repo.files.items())]).encode()).hexdigest()
        repo.commits.append(oid)
        repo.at[oid] = dict(repo.files)
        return oid

    def gets(self, path_suffix: str) -> list[dict]:
        return [h for m, p, h in self.requests if m == "GET" and p.endswith(path_suffix)]

    # -- HTTP ------------------------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):   # quiet
                pass

            def _record(self):
                hub.requests.append((self.command, self.path.split("?")[0],
                                     {k: self.headers[k] for k in ("Range", "Authorization") if self.headers[k]}))

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, status: int, data) -> None:
                self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

            def _error(self, status: int, message: str, code: str | None = None) -> None:
                headers = {"Content-Type": "application/json", "X-Error-Message": message}
                if code:
                    headers["X-Error-Code"] = code
                self._send(status, json.dumps({"error": message}).encode(), headers)

            def _authorized(self) -> bool:
                if hub.token is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                self._error(401, "Invalid credentials in Authorization header")
                return False

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            # download -----------------------------------------------------------------------
            def _resolve(self, head: bool) -> None:
                self._record()
                if self.command in hub.drop:
                    self.close_connection = True   # no status line, no headers: the peer sees EOF
                    return
                match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                if not match:
                    return self._error(404, "not found")
                repo_id, revision, path = match.groups()
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "Repository not found", "RepoNotFound")
                commit = repo.commits[-1] if revision == "main" else revision
                if commit not in repo.at:
                    return self._error(404, "Invalid rev id", "RevisionNotFound")
                data = repo.at[commit].get(path)
                if data is None:
                    return self._error(404, "Entry not found", "EntryNotFound")
                etag = hashlib.sha256(data).hexdigest() if is_lfs(path, data) else git_blob_sha1(data)
                etag = hub.etags.get(path, etag)
                headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                start, status = 0, 200
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if ranged and not head:
                    start, status = int(ranged.group(1)), 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                headers["Content-Length"] = str(len(body))
                cut = None if head else hub.cut_after.pop(path, None)
                if cut is not None:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True   # the rest never comes
                    return
                self._send(status, body, headers, head=head)

            def do_HEAD(self):
                self._resolve(head=True)

            def do_GET(self):
                self._resolve(head=False)

            # upload -------------------------------------------------------------------------
            def do_POST(self):
                self._record()
                path = self.path.split("?")[0]
                body = self._body()
                if not self._authorized():
                    return
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                    if repo_id in hub.repos:
                        return self._error(409, "You already created this model repo")
                    hub.repos[repo_id] = Repo(private=bool(data.get("private")))
                    return self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":   # the model card's metadata (README.md front matter)
                    content = json.loads(body)["content"]
                    front = re.match(r"---\n(.*?)\n---\n", content, re.S)
                    try:
                        meta = yaml.safe_load(front.group(1)) if front else {}
                    except yaml.YAMLError as exc:
                        return self._json(400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
                    if not isinstance(meta, dict):
                        return self._json(400, {"errors": [{"message": "metadata must be a mapping"}]})
                    hub.card_metadata.append(meta)
                    return self._json(200, {"warnings": []})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
                if match:
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [
                        {"path": f["path"], "uploadMode": "lfs" if f["size"] > 10_000 or
                         b"\0" in base64.b64decode(f["sample"]) else "regular", "shouldIgnore": False}
                        for f in files]})
                match = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
                if match:
                    objects = json.loads(body)["objects"]
                    return self._json(200, {"transfer": "basic", "objects": [
                        {"oid": o["oid"], "size": o["size"], "authenticated": True,
                         "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}}
                        for o in objects if o["oid"] not in hub.lfs_objects]})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
                if match:
                    repo_id = match.group(1)
                    if repo_id not in hub.repos:
                        return self._error(404, "Repository not found", "RepoNotFound")
                    files = {}
                    for line in body.decode().splitlines():
                        entry = json.loads(line)
                        value = entry["value"]
                        if entry["key"] == "file":
                            files[value["path"]] = base64.b64decode(value["content"])
                        elif entry["key"] == "lfsFile":
                            blob = hub.lfs_objects.get(value["oid"])
                            if blob is None:
                                return self._error(400, f"LFS object {value['oid']} was never uploaded")
                            files[value["path"]] = blob
                    oid = hub.commit(repo_id, files)
                    return self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})
                self._error(404, f"fake hub: no endpoint {self.command} {path}")

            def do_PUT(self):
                self._record()
                match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", self.path)
                body = self._body()
                if not match:
                    return self._error(404, "not found")
                if hashlib.sha256(body).hexdigest() != match.group(1):
                    return self._error(400, "sha256 mismatch")
                hub.lfs_objects[match.group(1)] = body
                self._send(200)

        return Handler
