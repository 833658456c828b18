"""The format layer's weight.bin reader and writer vs coremltools' own blob storage writer/reader,
and corrupt files: every record field is validated exactly."""

import struct

import numpy as np
import pytest
from coremltools import libmilstoragepython as storage

from kiln.foundation.errors import KilnError
from kiln.coreml.blob import BlobFile, BlobWriter
from kiln.coreml.errors import BlobFormatError

RNG = np.random.default_rng(3)

CASES = {
    # name: (writer method, data, kiln dtype name)
    "fp16": ("write_fp16_data", RNG.standard_normal(37).astype(np.float16).view(np.uint16), "fp16"),
    "fp32": ("write_float_data", RNG.standard_normal(21).astype(np.float32), "fp32"),
    "uint8": ("write_uint8_data", RNG.integers(0, 256, 70).astype(np.uint8), "uint8"),
    "int8": ("write_int8_data", RNG.integers(-128, 128, 9).astype(np.int8), "int8"),
    "int16": ("write_int16_data", RNG.integers(-30000, 30000, 13).astype(np.int16), "int16"),
    "uint16": ("write_uint16_data", RNG.integers(0, 65535, 13).astype(np.uint16), "uint16"),
    "int32": ("write_int32_data", RNG.integers(-2**31, 2**31 - 1, 5).astype(np.int32), "int32"),
    "uint32": ("write_uint32_data", RNG.integers(0, 2**32 - 1, 5).astype(np.uint32), "uint32"),
    "int4": ("write_int4_data", RNG.integers(-8, 8, 11).astype(np.int8), "int4"),
    "uint1": ("write_uint1_data", RNG.integers(0, 2, 19).astype(np.uint8), "uint1"),
    "uint2": ("write_uint2_data", RNG.integers(0, 4, 7).astype(np.uint8), "uint2"),
    "uint3": ("write_uint3_data", RNG.integers(0, 8, 23).astype(np.uint8), "uint3"),
    "uint4": ("write_uint4_data", RNG.integers(0, 16, 9).astype(np.uint8), "uint4"),
    "uint6": ("write_uint6_data", RNG.integers(0, 64, 17).astype(np.uint8), "uint6"),
}
READERS = {"fp16": "read_fp16_data", "fp32": "read_float_data"}


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("blob") / "weight.bin"
    writer = storage._BlobStorageWriter(str(path))
    offsets = {name: getattr(writer, method)(data) for name, (method, data, _) in CASES.items()}
    del writer
    return path, offsets


def test_every_dtype_matches_coremltools(weight_file):
    path, offsets = weight_file
    reference = storage._BlobStorageReader(str(path))
    with BlobFile(path) as blob:
        assert blob.count == len(CASES)
        assert [r.offset for r in blob.records()] == sorted(offsets.values())
        for name, (_, data, dtype) in CASES.items():
            got = blob.read(offsets[name], dtype)
            theirs = getattr(reference, READERS.get(name, f"read_{name}_data"))(offsets[name])
            if name == "fp16":
                np.testing.assert_array_equal(got, data.view(np.float16))
                np.testing.assert_array_equal(got.view(np.uint16), theirs)
            else:
                np.testing.assert_array_equal(got, data, err_msg=name)
                np.testing.assert_array_equal(got, theirs, err_msg=name)
            assert blob.record(offsets[name]).count == data.size


def test_bf16_and_fp8_decoding(tmp_path):
    values = np.array([1.0, -2.5, 0.15625, 448.0], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    e4m3 = np.array([0x38, 0xC0, 0x7E, 0x01], np.uint8)  # 1.0, -2.0, 448, 2^-9
    e5m2 = np.array([0x3C, 0x7C, 0xC2, 0x00], np.uint8)  # 1.0, inf, -3.0, 0
    blobs = [(5, bf16.tobytes()), (16, e4m3.tobytes()), (17, e5m2.tobytes())]
    data = bytearray(struct.pack("<II", len(blobs), 2) + bytes(56))
    offsets = []
    for code, payload in blobs:
        offsets.append(len(data))
        data += struct.pack("<IIQQQ", 0xDEADBEEF, code, len(payload), len(data) + 64, 0) + bytes(32)
        data += payload + bytes(-len(payload) % 64)
    path = tmp_path / "weight.bin"
    path.write_bytes(bytes(data))
    with BlobFile(path) as blob:
        np.testing.assert_array_equal(blob.read(offsets[0], "bf16"), [1.0, -2.5, 0.15625, 448.0])
        np.testing.assert_array_equal(blob.read(offsets[1], "fp8e4m3fn"), [1.0, -2.0, 448.0, 2.0**-9])
        np.testing.assert_array_equal(blob.read(offsets[2], "fp8e5m2"), [1.0, np.inf, -3.0, 0.0])


def _corrupt(path, offset, fmt, value):
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "mutation,message",
    [
        (lambda p, o: _corrupt(p, o, "<I", 0xDEADBEEE), "sentinel"),
        (lambda p, o: _corrupt(p, o + 4, "<I", 99), "unknown blob dtype"),
        (lambda p, o: _corrupt(p, o + 8, "<Q", 1 << 40), "past the end"),
        (lambda p, o: _corrupt(p, o + 16, "<Q", 1 << 50), "data offset"),
        (lambda p, o: _corrupt(p, o + 16, "<Q", o), "data offset"),
        # one flipped bit in data_offset used to be accepted (the data read 64 bytes later)
        (lambda p, o: _corrupt(p, o + 16, "<Q", (o + 64) ^ (1 << 6)), "data offset .* is not the record's end"),
        (lambda p, o: _corrupt(p, o + 16, "<Q", o + 65), "data offset .* is not the record's end"),
        (lambda p, o: _corrupt(p, o + 24, "<Q", 3), "padding bits"),
        (lambda p, o: _corrupt(p, o + 40, "<I", 1), "reserved bytes of the record"),
        (lambda p, o: _corrupt(p, 12, "<I", 1), "reserved bytes 8..63 of the file header"),
        (lambda p, o: _corrupt(p, o + 8, "<Q", 3), "not a multiple"),
        (lambda p, o: p.write_bytes(p.read_bytes()[: o + 70]), "past the end"),
        (lambda p, o: p.write_bytes(p.read_bytes()[: o + 10]), "outside the file"),
        (lambda p, o: _corrupt(p, 4, "<I", 3), "version"),
        (lambda p, o: p.write_bytes(b"\x00" * 10), "shorter than"),
    ],
)
def test_corrupt_files_raise_typed_errors(weight_file, tmp_path, mutation, message):
    path, offsets = weight_file
    bad = tmp_path / "weight.bin"
    bad.write_bytes(path.read_bytes())
    offset = offsets["fp32"]
    mutation(bad, offset)
    with pytest.raises(BlobFormatError, match=message) as info:
        with BlobFile(bad) as blob:
            blob.read(offset, "fp32")
    assert str(bad) in str(info.value)
    assert isinstance(info.value, KilnError)


def test_wrong_offset_and_dtype_mismatch(weight_file):
    path, offsets = weight_file
    with BlobFile(path) as blob:
        with pytest.raises(BlobFormatError, match="aligned"):
            blob.read(offsets["fp32"] + 8)
        with pytest.raises(BlobFormatError, match="outside the file"):
            blob.read(10**9)
        with pytest.raises(BlobFormatError, match="declares fp16 but the blob holds fp32"):
            blob.read(offsets["fp32"], "fp16")
        with pytest.raises(BlobFormatError, match="sentinel"):
            blob.read(offsets["fp32"] + 64 * ((offsets["uint8"] - offsets["fp32"]) // 64 // 2 or 1))


def test_missing_file():
    with pytest.raises(BlobFormatError, match="cannot open"):
        BlobFile("/nonexistent/weight.bin")


def test_writer_reproduces_coremltools_byte_for_byte(weight_file, tmp_path):
    path, offsets = weight_file
    ours = tmp_path / "ours.bin"
    with BlobWriter(ours) as writer:
        written = {name: writer.write(dtype, data) for name, (_, data, dtype) in CASES.items()}
    assert written == offsets
    assert ours.read_bytes() == path.read_bytes()
    with BlobFile(ours) as blob:
        assert sorted(blob.validate()) == sorted(offsets.values())


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda data: data + b"\x00" * 100, "unexpected bytes after the last"),
        (lambda data: data + b"\x01", "unexpected bytes after the last"),
        (lambda data: data[:-1], "runs past the end"),
        (lambda data: struct.pack("<I", 99) + data[4:], "outside the file|sentinel"),
    ],
)
def test_validate_walks_the_whole_file(weight_file, tmp_path, damage, message):
    path, _ = weight_file
    bad = tmp_path / "weight.bin"
    bad.write_bytes(damage(path.read_bytes()))
    with pytest.raises(BlobFormatError, match=message) as info:
        with BlobFile(bad) as blob:
            blob.validate()
    assert str(bad) in str(info.value)


def test_padding_between_records_must_be_zero(weight_file, tmp_path):
    path, offsets = weight_file
    data = bytearray(path.read_bytes())
    with BlobFile(path) as blob:
        record = blob.record(offsets["int8"])  # 9 bytes of data: 55 bytes of padding follow
    data[record.end + 3] = 0x5A
    bad = tmp_path / "weight.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(BlobFormatError, match="padding before the record is not zero") as info:
        with BlobFile(bad) as blob:
            blob.validate()
    assert info.value.offset == min(o for o in offsets.values() if o > offsets["int8"])


def test_a_symlinked_weight_file_is_refused_not_followed(weight_file, tmp_path):
    path, _ = weight_file
    link = tmp_path / "weight.bin"
    link.symlink_to(path)
    with pytest.raises(BlobFormatError, match="symlink"):
        BlobFile(link)


def test_shared_reads_are_copy_on_write_views_that_outlive_the_file_handle(tmp_path):
    """The executor's reads: a view of a private mapping (no copy), writeable, a write never
    reaching the file; closing the BlobFile leaves the arrays valid."""
    import hashlib

    path = tmp_path / "weight.bin"
    values = np.arange(4096, dtype=np.float16) / 7
    with BlobWriter(path) as writer:
        offset = writer.write("fp16", values)
        small = writer.write("int4", np.array([1, -2, 3], np.int8))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    blob = BlobFile(path)
    shared = blob.read(offset, "fp16", shared=True)
    copied = blob.read(offset, "fp16")
    np.testing.assert_array_equal(shared, values)
    assert not shared.flags.owndata and copied.flags.owndata
    assert shared.flags.writeable
    np.testing.assert_array_equal(blob.read(small, "int4", shared=True), [1, -2, 3])  # sub-byte: unpacked
    blob.close()
    shared[:10] = 0  # private page: the file keeps its bytes
    np.testing.assert_array_equal(shared[10:], values[10:])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert np.array_equal(BlobFile(path).read(offset, "fp16"), values)
