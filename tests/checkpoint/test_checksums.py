"""checksums.json: written before COMPLETE by the folder protocol, and finding every kind of damage."""
import errno
import json

import pytest

from megatron_spirit.checkpoint.checksums import MANIFEST, CorruptCheckpoint, read_manifest, verify, verify_or_raise
from megatron_spirit.checkpoint.folder import COMPLETE, CheckpointDir


def _checkpoint(tmp_path):
    cd = CheckpointDir(tmp_path)
    tmp = cd.begin(10)
    (tmp / "a.distcp").write_bytes(bytes(range(256)) * 100)
    (tmp / "tokenizer").mkdir()
    (tmp / "tokenizer" / "tokenizer.model").write_bytes(b"spm")
    return cd.commit(10)


def test_commit_writes_the_manifest_of_every_file(tmp_path):
    final = _checkpoint(tmp_path)
    algorithm, files = read_manifest(final)
    assert sorted(files) == ["a.distcp", "tokenizer/tokenizer.model"] and files["a.distcp"]["size"] == 25600
    assert (final / COMPLETE).is_file() and verify(final) == []
    assert json.loads((final / MANIFEST).read_text())["algorithm"] == algorithm == "xxh3_128"


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:100] + b"\xff" * 8 + p.read_bytes()[108:]), "does not match its checksum"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "has 1000 bytes, 25600 when saved"),
    (lambda p: p.unlink(), "is missing"),
])
def test_damage_is_named(tmp_path, damage, message):
    final = _checkpoint(tmp_path)
    damage(final / "a.distcp")
    with pytest.raises(CorruptCheckpoint, match=f"{final}/a.distcp {message}"):
        verify_or_raise(final)
    assert verify(final, part=1, parts=2) == []  # the other rank's share: intact


def test_disk_full_is_recognised_without_an_errno(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as an 'enforce fail'; a nearly full file system says why."""
    import shutil
    from collections import namedtuple

    from megatron_spirit.checkpoint import resume

    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4048")
    assert not resume._disk_full(torch_error, tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9, 4096))
    assert resume._disk_full(torch_error, tmp_path)
    monkeypatch.undo()
    wrapped = RuntimeError("worker failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert resume._disk_full(wrapped, tmp_path)


def test_crc32_manifests_verify_too(tmp_path, monkeypatch):
    """Written where xxhash is missing: still verified."""
    from megatron_spirit.checkpoint import checksums

    monkeypatch.setattr(checksums, "ALGORITHM", "crc32")
    final = _checkpoint(tmp_path)
    monkeypatch.undo()
    assert read_manifest(final)[0] == "crc32" and verify(final) == []
    (final / "a.distcp").write_bytes(b"\0" * 25600)
    assert "does not match its checksum" in verify(final)[0]
