"""The Hugging Face Hub, both ways, through ``huggingface_hub``.

**Download** (the ``hf`` source kind): each file of a model at a pinned commit. The Hub's metadata
(``get_hf_file_metadata``: HEAD on ``/<repo>/resolve/<commit>/<file>``) gives the commit it resolved,
the file's etag (sha256 for LFS files, the git blob sha1 otherwise) and size; the bytes stream with
``huggingface_hub``'s ``http_get`` into ``<file>.<etag>.incomplete`` beside the destination, which a
killed or failed run leaves in place, so the next run resumes it with an HTTP range request instead of
starting over (``hf_hub_download`` itself discards partial files between processes). The finished
file is checked against the etag before it is renamed into place; its sha256 goes into the fetch
record.

**Upload** (``kiln publish``): ``HfApi.create_repo`` and ``HfApi.upload_folder`` with the token from
the environment (``HF_TOKEN``). ``HF_ENDPOINT`` points both at another Hub (the tests run a local one).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kiln.foundation.errors import KilnError, SourceError
from kiln.foundation.fsutil import sha256_file

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
#: suffix of a partial download (kept across runs for resuming; ignored by DVC, see .dvcignore)
INCOMPLETE_SUFFIX = ".incomplete"


class HubError(KilnError):
    """Publishing to the Hub was refused or failed. Names the repo, the file or what is missing."""


@dataclass
class HubFile:
    path: Path
    sha256: str
    size: int
    etag: str
    commit: str
    resumed_from: int      # bytes already on disk when this download started (0: fresh or cached)
    downloaded: bool       # False: the file on disk already had the Hub's etag


def safe_relative(filename: str) -> PurePosixPath:
    rel = PurePosixPath(filename)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SourceError(f"Hub file name {filename!r} must be a relative path inside the repo")
    return rel


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _is_transport_error(exc: BaseException) -> bool:
    """httpx's errors (connection refused or dropped, protocol errors, timeouts), which
    ``huggingface_hub`` lets through; httpx may be installed as ``httpx`` or ``httpx2``."""
    return type(exc).__module__.split(".")[0].startswith("httpx")


def check_etag(etag: str, where: str) -> None:
    """Refuse an ETag that names no content kiln can check (a sha256 or a git blob sha1) before it
    is used in a file name: the server chooses it."""
    if not (SHA256_RE.fullmatch(etag) or GIT_SHA1_RE.fullmatch(etag)):
        shown = etag if len(etag) <= 80 else etag[:77] + "..."
        raise SourceError(f"{where}: the Hub's ETag {shown!r} is neither a sha256 nor a git blob sha1; "
                          f"cannot check the download, refusing it")


def matches_etag(path: Path, etag: str) -> tuple[bool, str]:
    """(whether ``path`` has the content the Hub's ``etag`` names, the file's sha256)."""
    sha256 = sha256_file(path)
    if SHA256_RE.fullmatch(etag):
        return sha256 == etag, sha256
    if GIT_SHA1_RE.fullmatch(etag):
        return _git_blob_sha1(path) == etag, sha256
    raise SourceError(f"{path}: the Hub's etag {etag!r} is neither a sha256 nor a git blob sha1; "
                      f"cannot check the download")


def download(repo_id: str, filename: str, revision: str, dest_dir: str | os.PathLike,
             *, token: str | bool | None = None, endpoint: str | None = None) -> HubFile:
    """``filename`` of ``repo_id`` at commit ``revision`` into ``dest_dir`` (resuming a partial file)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    where = f"{repo_id}/{filename} @ {revision}"
    dest = Path(dest_dir).joinpath(*safe_relative(filename).parts)
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except (HfHubHTTPError, OSError) as exc:
        raise SourceError(f"cannot reach {where} ({url}): {type(exc).__name__}: {_first_line(exc)}") from None
    except Exception as exc:   # httpx transport errors (connection refused, timeouts)
        if _is_transport_error(exc):
            raise SourceError(f"cannot reach {where} ({url}): {type(exc).__name__}: {_first_line(exc)}") from None
        raise
    if not meta.etag or not meta.commit_hash:
        raise SourceError(f"{where}: the Hub's answer has no etag or commit (headers ETag / X-Repo-Commit)")
    if meta.commit_hash != revision:
        raise SourceError(f"{where}: the Hub resolved the pinned revision to commit {meta.commit_hash}; "
                          f"pin a full commit sha (source.revision)")
    etag = meta.etag.removeprefix("W/").strip('"')   # a weak validator names the same content
    check_etag(etag, where)
    if dest.is_file():
        ok, sha256 = matches_etag(dest, etag)
        if ok:
            return HubFile(dest, sha256, dest.stat().st_size, etag, meta.commit_hash, 0, False)
    partial = dest.with_name(f"{dest.name}.{etag[:16]}{INCOMPLETE_SUFFIX}")
    created = [d for d in (partial.parent, *partial.parent.parents) if not d.exists()]
    partial.parent.mkdir(parents=True, exist_ok=True)
    resume = partial.stat().st_size if partial.is_file() else 0
    if meta.size is not None and resume > meta.size:
        resume = 0   # not a prefix of this file
    with open(partial, "r+b" if partial.exists() else "wb") as handle:
        handle.truncate(resume)
        handle.seek(resume)
        try:
            http_get(meta.location, handle, resume_size=resume, headers=build_hf_headers(token=token),
                     expected_size=meta.size, displayed_filename=filename)
            failure = None
        except (HfHubHTTPError, OSError) as exc:
            failure = exc
        except Exception as exc:
            if not _is_transport_error(exc):
                raise
            failure = exc
        received = handle.tell()
    if failure is not None:
        # bytes received are kept for the next run to resume; an empty partial file (and the
        # directories made for it) would only be litter
        kept = f"run the fetch again to resume from {partial}"
        if received == 0:
            partial.unlink(missing_ok=True)
            for directory in created:
                try:
                    directory.rmdir()
                except OSError:
                    break
            kept = "nothing was kept; run the fetch again"
        raise SourceError(f"download of {where} stopped after {received} bytes "
                          f"({type(failure).__name__}: {_first_line(failure)}); {kept}")
    ok, sha256 = matches_etag(partial, etag)
    if not ok:
        partial.unlink()
        raise SourceError(f"{where}: the downloaded bytes do not match the Hub's etag {etag} "
                          f"(sha256 {sha256}); the partial file was removed, run the fetch again")
    os.replace(partial, dest)
    return HubFile(dest, sha256, dest.stat().st_size, etag, meta.commit_hash, resume, True)


# -- upload -----------------------------------------------------------------------------------------

def token_from_environment() -> str | None:
    """The Hub token kiln publishes with: ``HF_TOKEN`` (never a token file: publishing is explicit)."""
    return os.environ.get("HF_TOKEN") or None


def upload(folder: str | os.PathLike, repo_id: str, *, token: str, message: str, private: bool = False,
           endpoint: str | None = None) -> dict:
    """Create ``repo_id`` if needed and commit ``folder``'s files to it. Returns the commit's url/oid."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        # Snakemake marks directory outputs with an empty .snakemake_timestamp: not part of the repo
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=message, ignore_patterns=[".snakemake_timestamp", "**/.snakemake_timestamp"])
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise HubError(f"upload of {folder} to {repo_id} failed: {type(exc).__name__}: {exc}") from None
    return {"repo_id": repo_id, "commit_url": str(getattr(info, "commit_url", info)),
            "commit": getattr(info, "oid", None), "endpoint": api.endpoint}


def _first_line(exc: BaseException) -> str:
    """huggingface_hub's errors carry several lines of advice; kiln's diagnostics are one line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
