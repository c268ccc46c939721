"""The engine socket's frames: cut from a byte stream however it arrives, refused when
they cannot be frames, and socket paths of any length."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdedge.realtime.wire import (
    MAX_FRAME_BYTES,
    Answer,
    Ask,
    FrameError,
    Frames,
    bind_unix,
    connect_unix,
    decode_answers,
    decode_asks,
    frame,
    listening,
)

ASKS = [
    Ask(1, 7, "web", "pageviews", b'{"td_client_id":"a"}', ["td_client_id=a"], False),
    Ask(2, 7, "web", "purchases", b'{"email":"b@c"}', ["email=b@c"], True),
]


def test_frames_cut_at_any_byte_boundary() -> None:
    stream = frame(ASKS) + frame([Answer(1, 0, b'{"offers":{}}')]) + frame(ASKS[:1])
    for step in (1, 3, 17, len(stream)):
        frames = Frames()
        payloads = [
            p for at in range(0, len(stream), step) for p in frames.feed(stream[at : at + step])
        ]
        assert len(payloads) == 3
        assert decode_asks(payloads[0]) == ASKS
        assert decode_answers(payloads[1]) == [Answer(1, 0, b'{"offers":{}}')]
        assert decode_asks(payloads[2]) == ASKS[:1]


def test_an_oversized_or_garbled_frame_is_refused() -> None:
    with pytest.raises(FrameError):
        list(Frames().feed((MAX_FRAME_BYTES + 1).to_bytes(4, "little")))
    (payload,) = Frames().feed(frame([Answer(1, 0, b"")]))
    with pytest.raises(FrameError):
        decode_asks(payload)  # answers are not asks


def test_a_socket_under_a_path_too_long_for_unix_sockets(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = deep / "engine.sock"
    assert len(str(path)) > 108
    server = bind_unix(path)
    try:
        assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
        client = connect_unix(path)
        conn, _ = server.accept()
        client.setblocking(True)
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.close()
        client.close()
    finally:
        server.close()


def test_connecting_to_nobody_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        connect_unix(tmp_path / "nobody.sock")


def test_listening_tells_a_live_socket_from_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    assert not listening(path)  # no file
    server = bind_unix(path)
    assert listening(path)
    server.close()
    assert path.exists() and not listening(path)  # the file of a dead listener
