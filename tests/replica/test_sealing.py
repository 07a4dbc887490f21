"""Sealed frames and key files: what opens, what does not and why, nonces, the files'
checks, generation and rotation on disk."""

from __future__ import annotations

import os
import stat

import msgpack
import pytest

from replica import feed, sealing
from replica.key_file import (KeyFile, KeyFileError, add_key, promote_key, read_key_file,
                              remove_key, sealer_for, write_new_key_file)

from tests.replica.conftest import make_server


@pytest.fixture
def key_path(tmp_path):
    path = str(tmp_path / "c1.key")
    write_new_key_file(path)
    return path


def _batch(cell="c1", seq=1):
    server = make_server()
    return feed.encode_batch(cell, "e1", [feed.Event(seq, "server", "u", server["uuid"],
                                                     server)])


def test_a_sealed_feed_message_opens_and_hides_its_content(key_path):
    sealer = sealer_for("c1", key_path)
    plain = _batch()
    frame = sealer.seal_feed(plain)
    assert sealing.is_sealed(frame) and not sealing.is_sealed(plain)
    assert b"project_id" not in frame
    assert sealer.open_feed(frame) == plain
    with pytest.raises(feed.FeedError, match="malformed"):   # never taken for a plain message
        feed.decode_message(frame)


def test_authenticate_only_is_readable_and_still_authenticated(key_path):
    sealer = sealing.Sealer("c1", KeyFile(key_path), encrypt=False)
    plain = _batch()
    frame = sealer.seal_feed(plain)
    assert plain in frame
    assert sealer_for("c1", key_path).open_feed(frame) == plain
    altered = frame.replace(b"project_id", b"project_iX")
    with pytest.raises(sealing.AuthError, match="does not authenticate"):
        sealer.open_feed(altered)


@pytest.mark.parametrize("flip", [0, 3, 10, 30, -1])
def test_any_altered_byte_fails(key_path, flip):
    sealer = sealer_for("c1", key_path)
    frame = bytearray(sealer.seal_feed(_batch()))
    frame[flip] ^= 0x01
    with pytest.raises(sealing.AuthError):
        sealer.open_feed(bytes(frame))


def test_a_message_of_one_cell_or_channel_does_not_open_as_another(key_path):
    """The same key on two cells (an operator's shortcut): still no cross-replay."""
    c1, c2 = sealer_for("c1", key_path), sealer_for("c2", key_path)
    frame = c1.seal_feed(_batch("c1"))
    with pytest.raises(sealing.AuthError, match="cell 'c2'"):
        c2.open_feed(frame)
    request, nonce = c1.seal_request(feed.encode_request("hello"))
    with pytest.raises(sealing.AuthError):
        c1.open_feed(request)             # a request is not a feed message
    reply = c1.seal_reply(feed.encode_reply(epoch="e1"), nonce)
    with pytest.raises(sealing.AuthError):
        c1.open_feed(reply)
    assert msgpack.unpackb(c1.open_reply(reply, nonce))["epoch"] == "e1"
    _other, other_nonce = c1.seal_request(feed.encode_request("hello"))
    with pytest.raises(sealing.AuthError):    # a recorded reply does not answer a new request
        c1.open_reply(reply, other_nonce)


def test_wrong_key_unsealed_and_unknown_key_say_which(key_path, tmp_path):
    other = str(tmp_path / "other.key")
    write_new_key_file(other)
    ours, theirs = sealer_for("c1", key_path), sealer_for("c1", other)
    with pytest.raises(sealing.AuthError, match="not in this key file"):
        ours.open_feed(theirs.seal_feed(_batch()))
    with pytest.raises(sealing.AuthError, match="not sealed"):
        ours.open_feed(_batch())
    with pytest.raises(sealing.AuthError, match="not sealed"):
        ours.open_feed(b"\xc1")
    with pytest.raises(sealing.AuthError, match="too short"):
        ours.open_feed(b"\xc1\x01\x00\x02k1")


def test_nonces_do_not_repeat_and_differ_after_fork(key_path):
    sealer = sealer_for("c1", key_path)
    header = 4 + len(sealer.keys().sealing_id)
    nonces = {sealer.seal_feed(b"x")[header:header + 12] for _ in range(10_000)}
    assert len(nonces) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child's nonces must not be the parent's next ones
        os.write(write, sealer.seal_feed(b"x")[header:header + 12])
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 12)
    os.close(read)
    os.close(write)
    ours = sealer.seal_feed(b"x")[header:header + 12]
    assert child[:8] != ours[:8]


def test_rotation_two_keys_open_the_first_seals(key_path, tmp_path):
    old = sealer_for("c1", key_path)
    old_frame = old.seal_feed(b"old")
    new_id = add_key(key_path)                   # opens, does not seal
    both = sealer_for("c1", key_path)
    assert both.keys().ids[1] == new_id and both.keys().sealing_id != new_id
    first_id = add_key(key_path)
    promote_key(key_path, first_id)              # seals from now on
    ring = read_key_file(key_path)
    assert ring.sealing_id == first_id and len(ring.ids) == 3
    newest = sealer_for("c1", key_path)
    assert newest.open_feed(old_frame) == b"old"
    with pytest.raises(sealing.AuthError, match="not in this key file"):
        old.open_feed(newest.seal_feed(b"new"))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_a_key_file_is_followed_for_changes(key_path, monkeypatch):
    from replica import key_file
    monkeypatch.setattr(key_file, "CHECK_INTERVAL", 0.0)
    keys = KeyFile(key_path)
    before = keys().sealing_id
    new_id = add_key(key_path)
    promote_key(key_path, new_id)
    assert keys().sealing_id == new_id != before
    remove_key(key_path, before)
    assert keys().ids == (new_id,)
    with pytest.raises(KeyFileError, match="its only key"):
        remove_key(key_path, new_id)
    with open(key_path, "a") as f:     # a broken file keeps the keys read before
        f.write("garbage\n")
    assert keys().sealing_id == new_id


def test_keygen_writes_mode_0600_and_refuses_to_overwrite(tmp_path):
    path = str(tmp_path / "k")
    key_id = write_new_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_key_file(path).ids == (key_id,)
    with pytest.raises(FileExistsError):
        write_new_key_file(path)


@pytest.mark.parametrize("content, mode, expected", [
    (None, 0o644, "mode 0644 lets group or others at it; run 'chmod 600"),
    (None, 0o640, "mode 0640"),
    ("", 0o600, "holds no key (make one with 'appliance keygen"),
    ("# only a comment\n", 0o600, "holds no key"),
    ("k1\n", 0o600, "line 1: expected '<key id> <base64 key>'"),
    ("k1 not*base64\n", 0o600, "line 1: the key is not base64"),
    ("k1 c2hvcnQ=\n", 0o600, "line 1: the key is 5 bytes, not 32"),
    ("k1 " + "A" * 43 + "=\nk1 " + "A" * 43 + "=\n", 0o600, "line 2: key id 'k1' appears twice"),
    ("bad/id " + "A" * 43 + "=\n", 0o600, "line 1: expected"),
])
def test_a_bad_key_file_is_one_line_saying_how_to_fix_it(tmp_path, content, mode, expected):
    path = str(tmp_path / "k")
    if content is None:
        write_new_key_file(path)
    else:
        with open(path, "w") as f:
            f.write(content)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        read_key_file(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_key_file_says_so(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read it"):
        read_key_file(str(tmp_path / "nope"))


def test_a_tolerant_key_file_refuses_until_fixed(key_path, monkeypatch):
    from replica import key_file
    monkeypatch.setattr(key_file, "CHECK_INTERVAL", 0.0)
    os.chmod(key_path, 0o644)
    with pytest.raises(KeyFileError):
        KeyFile(key_path)
    keys = KeyFile(key_path, tolerate_errors=True)
    sealer = sealing.Sealer("c1", keys)
    with pytest.raises(sealing.AuthError, match="chmod 600"):
        sealer.seal_feed(b"x")
    assert sealer.key_ids() == []
    os.chmod(key_path, 0o600)
    assert sealer.open_feed(sealer.seal_feed(b"x")) == b"x"
    assert sealer.key_ids() == list(read_key_file(key_path).ids)
