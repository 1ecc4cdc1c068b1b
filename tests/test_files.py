"""gloss_lite.files: a write either replaces the whole file or leaves the old one, with no leftovers."""

import errno
import os
import stat

import pytest
import torch

from gloss_lite.files import UMASK, replace_atomically, write_atomically


def test_text_and_bytes_replace_the_file_with_the_permissions_open_gives(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old\n", encoding="utf-8")
    write_atomically(path, "σ = 0.5\r\nnew\n")
    assert path.read_bytes() == "σ = 0.5\r\nnew\n".encode("utf-8")  # UTF-8, line ends as given
    write_atomically(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~UMASK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plain"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")

    def full_disk(temporary):
        temporary.write_bytes(b"a,b\n1,")  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        replace_atomically(path, full_disk)
    assert path.read_text(encoding="utf-8") == "a,b\n1,2\n"
    assert os.listdir(tmp_path) == ["results.csv"]


def test_an_interrupt_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"epoch": 1}, path)

    def interrupted(temporary):
        temporary.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(path, interrupted)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    replace_atomically(path, lambda temporary: torch.save({"epoch": 2}, temporary))
    assert torch.load(path, weights_only=True) == {"epoch": 2} and os.listdir(tmp_path) == ["state.pt"]
