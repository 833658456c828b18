"""`kiln pull` (and `make pull`): fetch the build recorded in ``dvc.lock`` from the DVC remote, after
checking that there is one to fetch and that fetching it destroys nothing.

A bare ``dvc pull`` in a checkout without a recorded build fails with "Checkout failed ... Is your cache
up to date?", and after a local build it offers ``--force``, which deletes that build. ``kiln pull``
checks first and stops with one line saying what to do:

1. ``dvc.lock`` records the ``build`` stage's outputs (else nothing was recorded: build, or check out a
   commit whose lock records a pushed build);
2. the remote answers (a refused connection fails at once, not after boto's retries) and accepts the
   credentials, and it holds every recorded object the local cache lacks (else the lock was committed
   without ``dvc push``). This asks DVC's object database in-process: ``dvc status --cloud`` says "in
   sync" when the server cannot be reached. Only the recorded ``.dir`` listing is fetched here;
3. no file under the targets differs from the recorded build (``dvc data status --granular``, which
   needs that listing): a local build is never overwritten; move it aside or record it instead;

then runs ``dvc pull``. DVC downloads each object under a temporary name and renames it into the cache
when complete (``dvc_objects``' ``as_atomic``), so a failed pull leaves no partial object in the cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from kiln.foundation.errors import KilnError

#: the dvc.yaml stage whose outputs are the recorded build
BUILD_STAGE = "build"

NOTHING_RECORDED = ("nothing to pull: {lock} records no build (a build is recorded by `dvc commit -f` "
                    "and committing dvc.lock, then shared by `dvc push`); build here with `make run`, or "
                    "`git checkout` a commit whose dvc.lock records a pushed build")

#: S3 error codes meaning the credentials were refused (not a missing object or a network error)
CREDENTIAL_ERRORS = ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "Forbidden",
                     "Unable to locate credentials", "ExpiredToken")


class PullError(KilnError):
    """There is no recorded build to pull, pulling it would overwrite a local build, or the remote
    cannot give it. Names the file, the remote and what to do."""


def _dvc_executable() -> str:
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def _run_dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_dvc_executable(), *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def dvc_error_line(result: subprocess.CompletedProcess) -> str:
    """DVC's own diagnosis of a failed command, on one line, without its support footer."""
    text = f"{result.stderr}\n{result.stdout}"
    found = re.findall(r"^ERROR: (.*)$", text, re.M)
    message = found[-1] if found else (text.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    return re.sub(r"^unexpected error - ", "", message).strip()


def recorded_outputs(root: Path) -> dict[str, str]:
    """The output paths ``dvc.lock`` records for the build stage, with their digests."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        raise PullError(NOTHING_RECORDED.format(lock=f"{lock} is missing: this checkout"))
    try:
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(BUILD_STAGE) or {}
    except (yaml.YAMLError, AttributeError) as exc:
        raise PullError(f"{lock}: not a DVC lock file ({exc})".replace("\n", " ")) from None
    outs = {o["path"]: o["md5"] for o in stage.get("outs", []) if isinstance(o, dict) and o.get("md5")}
    if not outs:
        raise PullError(NOTHING_RECORDED.format(lock=f"{lock} has no recorded outputs of stage "
                                                     f"'{BUILD_STAGE}': this checkout"))
    return outs


def _under(path: str, targets: list[str]) -> bool:
    path = path.rstrip("/")
    return any(path == t or path.startswith(t + "/") or t.startswith(path + "/") for t in targets)


def unsaved_files(root: Path, targets: list[str]) -> list[str]:
    """Files under ``targets`` whose content differs from the recorded build or that it lacks: the
    files a checkout of the recorded build would overwrite or remove."""
    result = _run_dvc(root, "data", "status", "--granular", "--json")
    if result.returncode != 0:
        raise PullError(f"dvc data status failed in {root}: {dvc_error_line(result)}")
    uncommitted = json.loads(result.stdout or "{}").get("uncommitted", {})
    changed = uncommitted.get("modified", []) + uncommitted.get("added", [])
    return sorted(p for p in changed if not p.endswith("/") and _under(p, targets))


def _remote_name(repo, remote: str | None) -> str:
    name = remote or repo.config["core"].get("remote")
    if not name:
        raise PullError("no DVC remote to pull from: add one (`dvc remote add --local --default NAME URL`) or "
                        "pass --remote NAME")
    if name not in repo.config["remote"]:
        raise PullError(f"no DVC remote named '{name}' (configured: {', '.join(repo.config['remote']) or 'none'})")
    return name


def remote_description(repo, name: str) -> str:
    """``'NAME' (URL[ at ENDPOINT])``."""
    settings = repo.config["remote"][name]
    endpoint = settings.get("endpointurl")
    return f"'{name}' ({settings.get('url')}{f' at {endpoint}' if endpoint else ''})"


def _remote_failure(description: str, action: str, message: str) -> PullError:
    hint = ""
    if any(code in message for code in CREDENTIAL_ERRORS):
        hint = (" (credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `dvc remote modify --local "
                "NAME access_key_id ...` and `secret_access_key ...`)")
    elif "Could not connect" in message or "Connect timeout" in message:
        hint = " (is the server running, and is the remote's endpointurl right?)"
    return PullError(f"{action} on remote {description} failed: {message}{hint}")


def _check_endpoint_reachable(endpoint: str | None, description: str) -> None:
    """Fail in a second when nothing listens at an S3-compatible remote's endpoint (boto and s3fs would
    retry a refused connection for about 45 s before DVC reports it)."""
    if not endpoint:
        return
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=10).close()
    except OSError as exc:
        raise _remote_failure(description, "looking up the recorded build (nothing pulled)",
                              f"Could not connect to {url.hostname}:{port} ({exc.strerror or exc})") from None


def missing_from_remote(root: Path, lock_outs: dict[str, str], targets: list[str],
                        remote: str | None) -> tuple[str, list[str]]:
    """(the remote's description, recorded files under ``targets`` that neither the local cache nor the
    remote holds). Asks the remote through DVC's own object database, in this process: ``dvc status
    --cloud`` reports "in sync" when the server cannot be reached, this raises."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except DvcException as exc:
        raise PullError(f"{root}: {exc}".replace("\n", " ")) from None
    with repo:
        name = _remote_name(repo, remote)
        description = remote_description(repo, name)
        _check_endpoint_reachable(repo.config["remote"][name].get("endpointurl"), description)
        local = repo.cache.local
        try:
            odb = repo.cloud.get_remote_odb(name, "pull")
            wanted: dict[str, str] = {}   # oid -> the first recorded path with that content
            for out, oid in lock_outs.items():
                if not oid.endswith(".dir"):
                    wanted.setdefault(oid, out)
                    continue
                if local.exists(oid):
                    listing = json.loads(Path(local.oid_to_path(oid)).read_text())
                elif odb.fs.exists(odb.oid_to_path(oid)):
                    # the listing alone goes into the local cache: `dvc data status` then compares the
                    # workspace with the recorded build file by file (results/ is not touched)
                    local.add(odb.oid_to_path(oid), odb.fs, oid)
                    listing = json.loads(Path(local.oid_to_path(oid)).read_text())
                else:
                    wanted.setdefault(oid, out)   # not even its listing was pushed
                    continue
                for entry in listing:
                    wanted.setdefault(entry["md5"], f"{out}/{entry['relpath']}")
            wanted = {oid: path for oid, path in wanted.items() if _under(path, targets) and not local.exists(oid)}
            present = set(odb.oids_exist(set(wanted))) if wanted else set()
        except PullError:
            raise
        except Exception as exc:  # noqa: BLE001 - the network/credential boundary: one line, not a traceback
            message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            raise _remote_failure(description, "looking up the recorded build (nothing pulled)", message) from None
    return description, sorted(path for oid, path in wanted.items() if oid not in present)


def _sample(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def pull(root: Path | str = ".", targets: list[str] | None = None, remote: str | None = None) -> str:
    """Check, then ``dvc pull`` ``targets`` (default: every recorded output). Returns DVC's summary."""
    root = Path(root).resolve()
    if not (root / "dvc.yaml").is_file():
        raise PullError(f"{root}: no dvc.yaml here; run kiln pull at the top of a kiln checkout")
    outs = recorded_outputs(root)
    targets = [os.path.normpath(t).rstrip("/") for t in targets or []] or list(outs)
    for target in targets:
        if not any(target == out or target.startswith(out + "/") for out in outs):
            raise PullError(f"{target}: not a recorded output or a path under one (dvc.lock records "
                            f"{', '.join(outs)})")
    description, missing = missing_from_remote(root, outs, targets, remote)
    if missing:
        raise PullError(f"remote {description} lacks {len(missing)} file(s) of the build recorded in dvc.lock "
                        f"({_sample(missing)}): it was recorded but not pushed there; run `dvc push` where it was "
                        f"built (or pick the remote it went to with --remote), or build here with `make run`")
    unsaved = unsaved_files(root, targets)
    if unsaved:
        raise PullError(f"{len(unsaved)} file(s) under {', '.join(targets)} differ from the build recorded in "
                        f"dvc.lock ({_sample(unsaved)}); pulling would overwrite them, so nothing was pulled: "
                        f"move your build aside (`mv results results.mine`) and pull again, or keep it and "
                        f"record it (`dvc commit -f`)")
    result = _run_dvc(root, "pull", *(["--remote", remote] if remote else []), *targets)
    if result.returncode != 0:
        raise _remote_failure(description, "pulling the recorded build (results/ left as it was)",
                              dvc_error_line(result))
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "Everything is up to date."


def _command(args) -> int:
    summary = pull(args.root, args.targets, args.remote)
    print(f"{summary} (the build recorded in dvc.lock; `snakemake -n` now plans only what your edits need)")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "pull", help="fetch the build recorded in dvc.lock from the DVC remote, after checking it is safe",
        description="Check that dvc.lock records a build, that no local file under the targets differs from it, "
                    "and that the remote holds it, then `dvc pull` it. Never overwrites a local build.")
    parser.add_argument("targets", nargs="*", help="outputs or paths under them, e.g. results/silero_vad "
                                                   "(default: the whole recorded build)")
    parser.add_argument("--remote", "-r", help="a DVC remote name (default: the configured default remote)")
    parser.add_argument("--root", default=".", help="the kiln checkout (default: .)")
    parser.set_defaults(func=_command)
