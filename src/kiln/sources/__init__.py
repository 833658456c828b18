"""Source kinds: where a model's checkpoint comes from.

A registry of small functions, one per kind (``pypi``, ``hf``, ``path``, ``random``, ``onnx``). Each takes the
model's ``source`` block from ``config.yaml`` and returns a :class:`SourceRecord`: what was fetched,
from where, at which version or revision, and the sha256 of every file, so later stages can verify
the bytes they load and ``metadata.json`` can record provenance.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from kiln.foundation.errors import SourceError
from kiln.foundation.fsutil import sha256_file


@dataclass
class SourceFile:
    role: str          # what the file is to the model family, e.g. "checkpoint"
    path: str
    sha256: str
    size: int
    #: modification time when hashed: an unchanged size and mtime skip re-hashing (as DVC's state
    #: does), so a build hashes each checkpoint once
    mtime_ns: int | None = None


@dataclass
class SourceRecord:
    kind: str
    id: str
    revision: str | None
    version: str | None
    synthetic: bool
    files: list[SourceFile] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SourceRecord":
        files = [SourceFile(**f) for f in data.get("files", [])]
        return cls(kind=data["kind"], id=data["id"], revision=data.get("revision"),
                   version=data.get("version"), synthetic=bool(data.get("synthetic")),
                   files=files, details=dict(data.get("details") or {}))

    def file(self, role: str = "checkpoint") -> Path:
        """The path of the file with ``role``, after checking it still has the recorded sha256."""
        for entry in self.files:
            if entry.role == role:
                return verify_file(entry)
        raise SourceError(f"source '{self.id}' has no file with role '{role}'")


def describe_file(path: Path, role: str = "checkpoint") -> SourceFile:
    if not path.is_file():
        raise SourceError(f"checkpoint file not found: {path}")
    stat = path.stat()
    return SourceFile(role=role, path=str(path), sha256=sha256_file(path), size=stat.st_size,
                      mtime_ns=stat.st_mtime_ns)


def verify_file(entry: SourceFile) -> Path:
    """Fail loudly, naming the file, when a recorded checkpoint is missing or its bytes changed."""
    path = Path(entry.path)
    if not path.is_file():
        raise SourceError(f"checkpoint file is missing: {path} (recorded sha256 {entry.sha256[:12]}…)")
    stat = path.stat()
    if entry.mtime_ns is not None and (stat.st_size, stat.st_mtime_ns) == (entry.size, entry.mtime_ns):
        return path
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise SourceError(
            f"checkpoint file is corrupt or changed: {path}: sha256 {actual[:12]}… but the fetch "
            f"recorded {entry.sha256[:12]}…; re-run the fetch job (delete the model's source.json)")
    return path


def _check_expected_sha(spec: Mapping[str, Any], file: SourceFile) -> None:
    expected = spec.get("sha256")
    if expected and expected != file.sha256:
        raise SourceError(f"{file.path}: sha256 {file.sha256} does not match the configured "
                          f"source.sha256 {expected}")


FetchFn = Callable[[str, Mapping[str, Any], Path], SourceRecord]
SOURCE_KINDS: dict[str, FetchFn] = {}


def source_kind(name: str):
    """Register a fetch function for a source kind."""
    def register(fn: FetchFn) -> FetchFn:
        SOURCE_KINDS[name] = fn
        return fn
    return register


#: where the Makefile installs a source release that is not the environment's own version of its
#: package (``pip install --no-deps --target <prefix>/extra/<package>-<version>``): a build's
#: weights can come from one release while the environment imports another
SOURCE_RELEASES_DIR = "extra"


def source_release_dirs(package: str, version: str) -> list[Path]:
    """The folders searched for ``package==version`` besides ``sys.path``."""
    return [Path(sys.prefix) / SOURCE_RELEASES_DIR / f"{package}-{version}"]


def locate_distribution(model: str, package: str, version: str | None):
    """The installed distribution of ``package`` (``importlib.metadata.Distribution``): the
    environment's, or, when ``version`` is pinned, the one of exactly that version, on ``sys.path``
    or in :func:`source_release_dirs`. A missing or different version is a :class:`SourceError`
    naming the model, the pinned and the found versions."""
    found = list(md.distributions(name=package))       # in sys.path order, as imports find them
    if version is None:
        if not found:
            raise SourceError(f"model '{model}': package '{package}' is not installed")
        return found[0]
    dirs = source_release_dirs(package, version)
    found += [d for folder in dirs if folder.is_dir() for d in md.distributions(name=package, path=[str(folder)])]
    for dist in found:
        if dist.version == version:
            return dist
    have = ", ".join(sorted({d.version for d in found})) or "none"
    raise SourceError(f"model '{model}': source.version pins {package}=={version}, but the installed "
                      f"versions are: {have} (searched sys.path and {', '.join(map(str, dirs))}; "
                      f"`make setup` installs the pinned release)")


@source_kind("pypi")
def fetch_pypi(model: str, spec: Mapping[str, Any], workdir: Path) -> SourceRecord:
    """Weights shipped inside an installed package (e.g. ``silero-vad``'s ``data/silero_vad.jit``), of
    the release ``source.version`` pins when it does (see :func:`locate_distribution`)."""
    dist = locate_distribution(model, spec["package"], spec.get("version"))
    module_dir = Path(dist.locate_file(spec["module"]))
    if not module_dir.is_dir():
        raise SourceError(f"model '{model}': module '{spec['module']}' not found in {spec['package']}=="
                          f"{dist.version} ({module_dir})")
    file = describe_file(module_dir / spec["resource"])
    return SourceRecord(kind="pypi", id=f"{spec['package']}=={dist.version}", revision=None,
                        version=dist.version, synthetic=False, files=[file],
                        details={"package": spec["package"], "resource": spec["resource"]})


@source_kind("hf")
def fetch_hf(model: str, spec: Mapping[str, Any], workdir: Path) -> SourceRecord:
    """The checkpoint and any further files (``files``: role -> name) of a Hugging Face Hub repo at a
    pinned commit, downloaded into ``workdir`` (resumable; each checked against the Hub's etag; see
    :mod:`kiln.sources.hub`). The token, if any, is ``HF_TOKEN``; ``HF_ENDPOINT`` selects another Hub."""
    from kiln.sources.hub import download, safe_relative

    wanted = {"checkpoint": spec["filename"], **dict(spec.get("files") or {})}
    for filename in wanted.values():
        safe_relative(filename)   # every name checked before anything is downloaded
    files, hub = [], {}
    for role, filename in wanted.items():
        got = download(spec["repo_id"], filename, spec["revision"], workdir)
        files.append(describe_file(got.path, role))
        hub[role] = {"filename": filename, "etag": got.etag, "commit": got.commit,
                     "resumed_from_bytes": got.resumed_from, "downloaded": got.downloaded}
    _check_expected_sha(spec, files[0])
    details = {"filename": spec["filename"], "hub": hub}
    if spec.get("files"):
        details["files"] = dict(spec["files"])
    return SourceRecord(kind="hf", id=spec["repo_id"], revision=spec["revision"], version=spec.get("version"),
                        synthetic=False, files=files, details=details)


@source_kind("path")
def fetch_path(model: str, spec: Mapping[str, Any], workdir: Path) -> SourceRecord:
    """A checkpoint already on disk (``.nemo``, ``.pth``, ``.onnx``, ``.jit``), of the release
    ``source.version`` names when it does (the user's word: pin the bytes with ``sha256``)."""
    path = Path(spec["path"]).expanduser().resolve()
    file = describe_file(path)
    _check_expected_sha(spec, file)
    # a checkpoint inside the checkout is named relative to it: the same in every clone (kiln verify
    # rebuilds in another folder), not this machine's path
    checkout = Path.cwd().resolve()
    shown = path.relative_to(checkout).as_posix() if checkout in path.parents else str(path)
    return SourceRecord(kind="path", id=shown, revision=None, version=spec.get("version"), synthetic=False,
                        files=[file])


@source_kind("random")
def fetch_random(model: str, spec: Mapping[str, Any], workdir: Path, build_random=None) -> SourceRecord:
    """A random-initialised model built offline from an architecture config by ``build_random``
    (its family's builder, ``FamilySpec.make_random``: handed down, sources sit below the
    families), labelled synthetic."""
    if build_random is None:
        raise SourceError(f"model '{model}': a random source is built by its family's builder "
                          f"(family {spec['family']}), and none was given")
    workdir.mkdir(parents=True, exist_ok=True)
    path = build_random(spec["architecture"], seed=spec["seed"],
                        overrides=spec.get("overrides") or {}, out_dir=workdir)
    file = describe_file(Path(path))
    return SourceRecord(kind="random", id=f"random:{spec['family']}/{spec['architecture']}",
                        revision=None, version=None, synthetic=True, files=[file],
                        details={"architecture": spec["architecture"], "seed": spec["seed"],
                                 "overrides": dict(spec.get("overrides") or {})})


@source_kind("onnx")
def fetch_onnx(model: str, spec: Mapping[str, Any], workdir: Path) -> SourceRecord:
    """An ``.onnx`` graph (inside an installed package, or a local path), specialised to static
    shapes: its inputs bound (``source.inputs``), decidable ``If`` branches folded, dead nodes
    pruned (:mod:`kiln.sources.onnx_graph`). The specialised graph is written beside the other
    checkpoints (role ``static_graph``) after checking onnx2torch converts every op left, so an
    unsupported op stops the fetch, naming the op and the file."""
    from kiln.sources import onnx_graph

    where = {k: spec[k] for k in ("package", "module", "resource", "version") if k in spec}
    located = (SOURCE_KINDS["pypi"](model, where, workdir) if where
               else SOURCE_KINDS["path"](model, {k: spec[k] for k in ("path", "version") if k in spec}, workdir))
    original = located.files[0]
    _check_expected_sha(spec, original)
    path = Path(original.path)
    graph = onnx_graph.load(path)
    static, folded = onnx_graph.specialise(graph, spec["inputs"], path)
    onnx_graph.check_convertible(static, path)
    out = Path(workdir) / f"{path.stem}.static.onnx"
    onnx_graph.save(static, out)
    return SourceRecord(
        kind="onnx", id=located.id, revision=located.revision, version=located.version, synthetic=False,
        files=[original, describe_file(out, "static_graph")],
        details={**located.details, "opset": onnx_graph.opset(graph),
                 "inputs": {k: dict(v) for k, v in spec["inputs"].items()}, "folded": folded,
                 "ops": onnx_graph.op_counts(graph.graph), "static_ops": onnx_graph.op_counts(static.graph)})


def fetch(model: str, family: str, spec: Mapping[str, Any], workdir: Path, build_random=None) -> SourceRecord:
    """Fetch ``model``'s source with the function registered for its kind; a ``random`` source is
    built by ``build_random`` (the family's ``make_random``)."""
    kind = spec.get("kind")
    try:
        fetch_fn = SOURCE_KINDS[kind]
    except KeyError:
        raise SourceError(f"model '{model}': unknown source kind '{kind}' "
                          f"(known: {sorted(SOURCE_KINDS)})") from None
    builder = {"build_random": build_random} if kind == "random" else {}
    return fetch_fn(model, {**spec, "family": family}, Path(workdir), **builder)
