"""Sharing builds through an S3-compatible DVC remote, as a team does: a real S3 API server (moto's
server mode) on 127.0.0.1, every step a separate `snakemake`, `dvc`, `git` or `kiln` process in its own
clone. The remote's URL, endpoint and credentials live in `.dvc/config.local` or the environment,
never in a tracked file. `kiln pull` checks before it pulls: a recorded build (dvc.lock), no local file
it would overwrite, every object on the remote (src/kiln/workflow/pull.py)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers.workspaces import VENV_BIN, Workspace, copy_built, fake_build, small_workspace
from tests.helpers.s3server import S3Server, free_port, start_s3_server

REMOTE = "team"
BUCKET_URL = "s3://kiln-builds/kiln"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_s3_server(log_path=tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


def credentials(s3: S3Server) -> dict:
    return {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}


def use_s3_remote(ws: Workspace, s3: S3Server, endpoint: str | None = None) -> None:
    """Make the S3 remote this clone's default without editing a tracked file (.dvc/config.local)."""
    ws.dvc("remote", "add", "--local", "--default", "--force", REMOTE, BUCKET_URL)
    ws.dvc("remote", "modify", "--local", REMOTE, "endpointurl", endpoint or s3.endpoint)


def clone(origin: Workspace, root: Path, env: dict | None = None) -> Workspace:
    origin.git("clone", "-q", str(origin.root), str(root))
    ws = Workspace(root)
    ws.env.update(env or {})
    return ws


def kiln(ws: Workspace, *args: str, check: bool = True, env: dict | None = None):
    return ws.run(str(VENV_BIN / "kiln"), *args, check=check, env=env)


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cache_bytes(ws: Workspace) -> int:
    """Bytes of the objects in the clone's DVC cache (what it fetched, for a fresh clone)."""
    files = ws.root / ".dvc" / "cache" / "files"
    return sum(p.stat().st_size for p in files.rglob("*") if p.is_file()) if files.exists() else 0


def assert_one_line_error(result, *phrases: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kiln: error: PullError: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "--force" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


def record(ws: Workspace, message: str) -> None:
    ws.dvc("commit", "-f")
    ws.git("add", "dvc.lock")
    ws.git("commit", "-q", "-m", message)


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


@pytest.mark.slow
def test_round_trip_through_an_s3_remote(s3, small_built, tmp_path):
    figures = {}
    # A: build (`snakemake --cores 2 all`: the run's one build of the small workspace, copied here),
    # record, push
    a = copy_built(small_built, tmp_path / "a")
    a.env.update(credentials(s3))
    assert a.planned_jobs() == []
    record(a, "build")
    use_s3_remote(a, s3)
    assert a.git("status", "--porcelain").stdout == ""   # remote settings live in .dvc/config.local
    assert "endpointurl" not in (a.root / ".dvc" / "config").read_text()
    _, figures["push_s"] = timed(lambda: a.dvc("push"))
    first = s3.objects()
    figures["pushed_bytes"], figures["pushed_objects"] = sum(first.values()), len(first)
    assert a.dvc("status", "--cloud").stdout.strip().endswith("Cache and remote 'team' are in sync.")

    # B: fresh clone, `kiln pull` (credentials from the environment), nothing to rebuild
    b = clone(a, tmp_path / "b", credentials(s3))
    use_s3_remote(b, s3)
    pulled, figures["pull_s"] = timed(lambda: kiln(b, "pull"))
    assert "fetched" in pulled.stdout
    figures["pulled_bytes"] = cache_bytes(b)
    assert figures["pulled_bytes"] == figures["pushed_bytes"]
    assert file_digests(b.root / "results") == file_digests(a.root / "results")
    assert b.planned_jobs() == []
    kiln(b, "check", "results/silero_vad", "results/silero_vad_onnx")

    # B edits one setting, rebuilds what it changes, records it; C clones B before B pushes
    b.edit_config(lambda c: c["models"]["silero_vad_onnx"]["components"]["unified"].update(
        {"export": {"compute_precision": "float32"}}))
    b.git("commit", "-q", "-am", "silero_vad_onnx unified in float32")
    b.snakemake("--cores", "2", "all")
    record(b, "rebuild")
    c = clone(b, tmp_path / "c")
    use_s3_remote(c, s3)
    c.dvc("remote", "modify", "--local", REMOTE, "access_key_id", s3.access_key_id)     # credentials in
    c.dvc("remote", "modify", "--local", REMOTE, "secret_access_key", s3.secret_access_key)  # config.local
    assert c.git("status", "--porcelain").stdout == ""
    not_pushed = kiln(c, "pull", check=False)
    assert_one_line_error(not_pushed, "lacks", "recorded but not pushed", "dvc push")
    assert not (c.root / "results").exists()

    b.dvc("push")
    second = s3.objects()
    added = {key: size for key, size in second.items() if key not in first}
    figures["second_push_bytes"], figures["second_push_objects"] = sum(added.values()), len(added)
    changed = {path for path, digest in file_digests(b.root / "results").items()
               if file_digests(a.root / "results").get(path) != digest}
    assert 0 < len(added) <= len(changed) + 1   # changed files only, plus the new .dir listing
    assert all(path.startswith(("silero_vad_onnx/", ".kiln-ledger.json")) for path in changed), changed
    assert figures["second_push_bytes"] < figures["pushed_bytes"] / 2

    # C: plain `dvc pull` with the credentials in config.local gets B's artifacts
    _, figures["plain_dvc_pull_s"] = timed(lambda: c.dvc("pull"))
    figures["plain_dvc_pulled_bytes"] = cache_bytes(c)
    assert file_digests(c.root / "results") == file_digests(b.root / "results")
    assert c.planned_jobs() == []

    # D: one model's artifacts only
    d = clone(b, tmp_path / "d", credentials(s3))
    use_s3_remote(d, s3)
    kiln(d, "pull", "results/silero_vad_onnx")
    assert sorted(p.name for p in (d.root / "results").iterdir()) == ["silero_vad_onnx"]
    assert file_digests(d.root / "results/silero_vad_onnx") == file_digests(b.root / "results/silero_vad_onnx")
    figures["one_model_pulled_bytes"] = cache_bytes(d)
    assert figures["one_model_pulled_bytes"] < figures["pulled_bytes"]
    print("\nS3 round trip:", json.dumps(figures))


@pytest.fixture(scope="module")
def pushed_placeholder_build(s3, tmp_path_factory) -> Workspace:
    """A recorded and pushed build of placeholder outputs (conftest.fake_build): the objects are empty,
    but what DVC does with them is the same, in seconds."""
    ws = small_workspace(tmp_path_factory.mktemp("placeholder") / "kiln")
    fake_build(ws)
    (ws.root / "results/silero_vad/metadata.json").write_text('{"built": "placeholder"}\n')
    record(ws, "placeholder build")
    use_s3_remote(ws, s3)
    ws.run(str(VENV_BIN / "dvc"), "push", env=credentials(s3))
    return ws


def test_plain_dvc_pull_of_one_model_path_from_s3(s3, pushed_placeholder_build, tmp_path):
    """`dvc pull results/<model>` as DVC's users type it fetches that model's files and nothing else."""
    ws = clone(pushed_placeholder_build, tmp_path / "clone", credentials(s3))
    use_s3_remote(ws, s3)
    ws.dvc("pull", "results/silero_vad")
    assert sorted(p.name for p in (ws.root / "results").iterdir()) == ["silero_vad"]
    assert file_digests(ws.root / "results/silero_vad") == \
        file_digests(pushed_placeholder_build.root / "results/silero_vad")


@pytest.mark.parametrize("failure", ["server down", "wrong secret", "no credentials"])
def test_a_failed_pull_says_why_and_leaves_nothing_counted_as_pulled(s3, pushed_placeholder_build, tmp_path,
                                                                    failure):
    env = credentials(s3)
    endpoint = None
    if failure == "server down":
        endpoint = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    elif failure == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    else:
        (tmp_path / "home").mkdir()   # no ~/.aws either
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "HOME": str(tmp_path / "home")}
    ws = clone(pushed_placeholder_build, tmp_path / "clone", env)
    use_s3_remote(ws, s3, endpoint)
    expected = {"server down": "is the server running", "wrong secret": "AWS_SECRET_ACCESS_KEY",
                "no credentials": "AWS_SECRET_ACCESS_KEY"}[failure]
    assert_one_line_error(kiln(ws, "pull", check=False), f"remote 'team' ({BUCKET_URL} at", "nothing pulled",
                          expected)
    if failure != "server down":   # (against a closed port, boto retries for ~45 s before failing)
        # plain `dvc pull` fails too; neither leaves a file that a later status or pull takes as pulled
        assert ws.dvc("pull", check=False).returncode != 0
    assert not (ws.root / "results").exists()
    assert cache_bytes(ws) == 0
    # fixed, the same clone pulls the recorded build
    use_s3_remote(ws, s3)
    kiln(ws, "pull", env=credentials(s3))
    assert (ws.root / "results/silero_vad/metadata.json").read_text() == '{"built": "placeholder"}\n'


def test_pull_with_nothing_recorded_says_so_and_keeps_a_local_build(tmp_path):
    origin = small_workspace(tmp_path / "origin")   # main as committed: no dvc.lock
    ws = clone(origin, tmp_path / "clone")
    nothing = kiln(ws, "pull", check=False)
    assert_one_line_error(nothing, "nothing to pull", "dvc.lock is missing", "make run", "git checkout")
    assert not (ws.root / "results").exists()

    fake_build(ws)   # a local build, never recorded
    before = file_digests(ws.root / "results")
    assert_one_line_error(kiln(ws, "pull", check=False), "nothing to pull")
    assert file_digests(ws.root / "results") == before


def test_pull_never_overwrites_a_local_build_that_differs_from_the_recorded_one(tmp_path):
    origin = small_workspace(tmp_path / "origin")
    fake_build(origin)
    record(origin, "recorded build")
    unpushed = clone(origin, tmp_path / "before-push")   # the lock committed, nothing pushed yet
    assert_one_line_error(kiln(unpushed, "pull", check=False), f"remote 'local' ({tmp_path / 'kiln-dvc-remote'})",
                          "recorded but not pushed", "run `dvc push` where it was built")
    assert not (unpushed.root / "results").exists()
    origin.dvc("push")   # to the default remote: the folder ../kiln-dvc-remote beside the checkout
    ws = clone(origin, tmp_path / "clone")
    fake_build(ws)   # built here too, one file differing from the recorded build
    (ws.root / "results/silero_vad/metadata.json").write_text('{"built": "here"}\n')
    before = file_digests(ws.root / "results")
    refused = kiln(ws, "pull", check=False)
    assert_one_line_error(refused, "file(s) under results differ", "results/silero_vad/metadata.json",
                          "nothing was pulled", "mv results results.mine")
    assert file_digests(ws.root / "results") == before
    # another model's artifacts are not blocked by it
    kiln(ws, "pull", "results/silero_vad_onnx")
    assert (ws.root / "results/silero_vad/metadata.json").read_text() == '{"built": "here"}\n'
    assert_one_line_error(kiln(ws, "pull", "models/silero_vad", check=False),
                          "models/silero_vad: not a recorded output")
    # moved aside, the recorded build comes back whole
    (ws.root / "results").rename(ws.root / "results.mine")
    kiln(ws, "pull")
    assert file_digests(ws.root / "results") == file_digests(origin.root / "results")


@pytest.fixture(scope="module")
def pushed_build_of_distinct_files(s3, tmp_path_factory) -> Workspace:
    """A recorded and pushed placeholder build whose files hold distinct random bytes (64 KiB each), so a
    download can be cut off halfway through a file."""
    ws = small_workspace(tmp_path_factory.mktemp("distinct") / "kiln")
    fake_build(ws)
    for path in sorted((ws.root / "results").rglob("*")):
        if path.is_file() and path.name != ".kiln-ledger.json":
            path.write_bytes(os.urandom(64 * 1024))
    record(ws, "placeholder build of distinct files")
    use_s3_remote(ws, s3)
    ws.run(str(VENV_BIN / "dvc"), "push", env=credentials(s3))
    return ws


def cache_objects(ws: Workspace) -> dict[str, bytes]:
    """oid -> content of every file in the clone's DVC cache (a name that is not an md5 stays as it is)."""
    files = ws.root / ".dvc" / "cache" / "files" / "md5"
    return {f"{p.parent.name}{p.name}": p.read_bytes() for p in files.rglob("*") if p.is_file()} \
        if files.exists() else {}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["kiln pull", "dvc pull"])
def test_a_pull_cut_off_mid_download_leaves_only_whole_files(s3, pushed_build_of_distinct_files, tmp_path,
                                                            command):
    origin = pushed_build_of_distinct_files
    recorded = file_digests(origin.root / "results")
    ws = clone(origin, tmp_path / "clone", credentials(s3))
    use_s3_remote(ws, s3)
    program = str(VENV_BIN / command.split()[0])
    s3.cut_downloads(after=3)   # kiln pull's first download is the recorded listing
    try:
        cut = ws.run(program, "pull", check=False)
    finally:
        s3.restore_downloads()
    if command == "kiln pull":
        assert_one_line_error(cut, f"pulling the recorded build (results/ left as it was) on remote 'team' "
                                   f"({BUCKET_URL} at", "failed to download")
    else:
        assert cut.returncode != 0 and "failed to download" in cut.stderr, cut.stderr
    # the cache holds whole objects only, each named by its content's md5, and fewer than were pushed
    objects = cache_objects(ws)
    assert {oid: hashlib.md5(data).hexdigest() for oid, data in objects.items()} == \
        {oid: oid.removesuffix(".dir") for oid in objects}
    assert len(objects) < len(cache_objects(origin))
    # whatever was checked out is the recorded content; the rest is absent, not truncated
    pulled = file_digests(ws.root / "results") if (ws.root / "results").exists() else {}
    assert len(pulled) < len(recorded)
    assert {path: recorded.get(path) for path in pulled} == pulled
    # the connection back, the same clone pulls the rest
    kiln(ws, "pull")
    assert file_digests(ws.root / "results") == recorded
