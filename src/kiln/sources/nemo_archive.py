"""The ``.nemo`` pre-check: what kiln verifies itself before NeMo opens an archive.

A ``.nemo`` file is a tar archive holding a YAML config and pickled weights, and NeMo's restore
(``SaveRestoreConnector.load_config_and_state_dict``, NeMo 3.0) does three things kiln must bound:

1. it extracts every member into a temporary directory (``safe_extract(..., skip_unsafe=True)``
   silently *skips* unsafe members, so an archive's meaning depends on what was skipped);
2. it ``chdir``s there and loads ``model_config.yaml`` with ``OmegaConf.load``: the file at the
   archive's root, i.e. the last extracted member whose normalised path is ``model_config.yaml``
   (``./model_config.yaml`` and ``model_config.yaml`` land on the same file), never a
   ``sub/model_config.yaml``; when that document has a ``model`` key, its value is the config;
3. it instantiates the classes the config names (``target`` of the model, Hydra ``_target_`` of each
   module, the legacy ``cls``/``target`` + ``params`` form) by import path.

So kiln refuses the whole archive unless every member is a plain file or directory with a relative
path that stays inside (no symlink, no hard link, no device, no ``..``, no two members on one path);
it reads the very member NeMo will load, with a YAML loader that refuses duplicate keys as OmegaConf
does; and every class reference anywhere in any YAML member must be one of the exact class paths in
:data:`ALLOWED_CLASSES` (no prefixes: ``nemo.collections.asr.models.ctc_models.os.system`` starts with
a NeMo prefix and imports ``os.system``; an interpolation such as ``${a}${b}`` is not a class path).
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path
from typing import Any, Iterator

from kiln.foundation import yamlio
from kiln.foundation.errors import SourceError

#: the member NeMo loads (``SaveRestoreConnector.model_config_yaml``), relative to the archive root
CONFIG_MEMBER = "model_config.yaml"

#: keys whose value NeMo or Hydra imports and instantiates
CLASS_KEYS = ("_target_", "target", "cls")

#: the exact classes kiln's NeMo-based families instantiate (Parakeet TDT: the model class NeMo
#: records as ``target`` on save, and the module of each sub-config, as NeMo's own configs and
#: kiln's random builder spell them). Add a family's classes here when it needs more.
ALLOWED_CLASSES = frozenset({
    "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel",
    "nemo.collections.asr.models.EncDecRNNTBPEModel",
    "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
    "nemo.collections.asr.modules.audio_preprocessing.AudioToMelSpectrogramPreprocessor",
    "nemo.collections.asr.modules.SpectrogramAugmentation",
    "nemo.collections.asr.modules.audio_preprocessing.SpectrogramAugmentation",
    "nemo.collections.asr.modules.ConformerEncoder",
    "nemo.collections.asr.modules.conformer_encoder.ConformerEncoder",
    "nemo.collections.asr.modules.RNNTDecoder",
    "nemo.collections.asr.modules.rnnt.RNNTDecoder",
    "nemo.collections.asr.modules.RNNTJoint",
    "nemo.collections.asr.modules.rnnt.RNNTJoint",
})


def _open_tar(path: Path) -> tarfile.TarFile:
    for mode in ("r:", "r:gz"):  # NeMo >= 1.7 writes uncompressed tars, older ones gzip
        try:
            return tarfile.open(path, mode)
        except tarfile.ReadError:
            continue
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: cannot read .nemo archive: {exc}") from None
    raise SourceError(f"{path}: not a .nemo archive (neither a tar nor a gzipped tar file)")


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' path component"
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        target = member.linkname.replace("\\", "/")
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        where = ("link to absolute path" if target.startswith("/") else
                 "link pointing outside the archive" if resolved == ".." or resolved.startswith("../") else
                 "link inside the archive")
        return f"{kind} ({where} {member.linkname!r}); kiln accepts only regular files and directories"
    if not (member.isfile() or member.isdir()):
        return "device, fifo or other special entry"
    return None


def _member_path(member: tarfile.TarInfo) -> str:
    """Where NeMo's extraction puts ``member``, relative to the extraction root."""
    return posixpath.normpath(member.name.replace("\\", "/"))


def class_references(node: Any, key_path: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every class-naming key (:data:`CLASS_KEYS`) in a parsed config."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{key_path}.{key}" if key_path else str(key)
            if key in CLASS_KEYS:
                yield here, value
            yield from class_references(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from class_references(value, f"{key_path}[{index}]")


def _parse_yaml(path: Path, member: str, data: bytes) -> Any:
    """A YAML member read strictly and within bounds (:mod:`kiln.foundation.yamlio`: duplicate keys, alias bombs,
    deep nesting, oversized or non-UTF-8 members refused)."""
    where = f"{path}: {member}"
    try:
        return yamlio.parse(where, yamlio.decode(where, data))
    except yamlio.YamlFileError as exc:
        raise SourceError(str(exc)) from None


def _check_classes(path: Path, member: str, config: Any) -> None:
    for key, value in class_references(config):
        if not isinstance(value, str) or value not in ALLOWED_CLASSES:
            raise SourceError(f"{path}: {member} '{key}' names {value!r}, which is not one of the classes "
                              f"kiln allows a .nemo config to instantiate (kiln.sources.nemo_archive."
                              f"ALLOWED_CLASSES); refusing the archive")


def check_nemo_archive(path: str | Path) -> dict:
    """Refuse a ``.nemo`` archive with an unsafe member or config; return the config NeMo will load.

    Raises :class:`SourceError` naming the file and the offending member or key.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: .nemo file not found")
    yaml_members: dict[str, bytes] = {}
    with _open_tar(path) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"{path}: corrupt .nemo archive: {exc}") from exc
        seen: dict[str, str] = {}
        for member in members:
            reason = _unsafe_reason(member)
            if reason:
                raise SourceError(f"{path}: refusing unsafe .nemo member {member.name!r}: {reason}")
            target = _member_path(member)
            if target in seen and not member.isdir():
                raise SourceError(f"{path}: refusing .nemo member {member.name!r}: it extracts onto the same "
                                  f"path as {seen[target]!r} (the later one would silently win)")
            seen[target] = member.name
        for member in members:
            if member.isfile() and member.name.lower().endswith((".yaml", ".yml")):
                if member.size > yamlio.MAX_BYTES:
                    raise SourceError(f"{path}: {member.name}: {member.size:,} bytes; kiln reads YAML files of "
                                      f"at most {yamlio.MAX_BYTES:,}")
                try:
                    yaml_members[_member_path(member)] = tar.extractfile(member).read()
                except (tarfile.TarError, EOFError, OSError) as exc:
                    raise SourceError(f"{path}: corrupt .nemo member {member.name!r}: {exc}") from exc
    if CONFIG_MEMBER not in yaml_members:
        raise SourceError(f"{path}: .nemo archive has no {CONFIG_MEMBER} at its root (the file NeMo loads)")
    configs = {name: _parse_yaml(path, name, data) for name, data in yaml_members.items()}
    for name, parsed in configs.items():
        _check_classes(path, name, parsed)
    config = configs[CONFIG_MEMBER]
    if not isinstance(config, dict):
        raise SourceError(f"{path}: {CONFIG_MEMBER} is not a mapping")
    return config
