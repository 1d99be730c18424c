"""The Redis backend's own protocol code (llmpool/state/resp.py), over a socket pair."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from llmpool.state import resp


class Owner:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.disconnects = 0

    def disconnect(self) -> None:
        self.disconnects += 1
        self.sock.close()


@pytest.fixture
def pair() -> Iterator[tuple[resp.Link, socket.socket, Owner]]:
    ours, theirs = socket.socketpair()
    owner = Owner(ours)
    yield resp.Link(ours, owner, None), theirs, owner
    ours.close()
    theirs.close()


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert resp.command(b"GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert resp.command(b"SET", "k", b"\r\n", 5, 0.5) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$1\r\n5\r\n$3\r\n0.5\r\n"
    )
    # a header counting parts appended later
    assert resp.command(b"EVALSHA", count=2) + resp.append(["x", 7]) == (
        b"*3\r\n$7\r\nEVALSHA\r\n$1\r\nx\r\n$1\r\n7\r\n"
    )


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"$5\r\nhe\r\no\r\n", b"he\r\no"),
        (b"$-1\r\n", None),
        (b":-42\r\n", -42),
        (b"+OK\r\n", b"OK"),
        (b"*3\r\n:1\r\n$1\r\na\r\n*0\r\n", [1, b"a", []]),
        (b"*-1\r\n", None),
    ],
)
def test_replies_parse_to_values(data: bytes, value: object) -> None:
    assert resp.parse(data) == (value, len(data))


def test_an_error_reply_is_a_value_named_by_its_first_word() -> None:
    error, _ = resp.parse(b"-READONLY You can't write against a read only replica.\r\n")
    assert isinstance(error, resp.ReplyError) and error.code == "READONLY"


@pytest.mark.parametrize("cut", range(1, 19))
def test_a_reply_cut_anywhere_is_incomplete(cut: int) -> None:
    data = b"*2\r\n$5\r\nhello\r\n:7\r\n"
    with pytest.raises(resp._Incomplete) as info:
        resp.parse(data[:cut])
    assert cut < info.value.args[0] <= len(data)


def test_a_reply_in_pieces_is_read_whole(pair: tuple[resp.Link, socket.socket, Owner]) -> None:
    link, theirs, _ = pair
    value = b"x" * 200_000
    reply = b"$%d\r\n%s\r\n" % (len(value), value)
    theirs.sendall(reply[:3])  # the first recv sees a part of the header only
    theirs.sendall(reply[3:])
    assert link.request(resp.command(b"GET", "k"), 5.0) == value
    assert theirs.recv(100) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


def test_a_closed_connection_and_garbage_are_errors(
    pair: tuple[resp.Link, socket.socket, Owner],
) -> None:
    link, theirs, owner = pair
    theirs.sendall(b"?what\r\n")
    with pytest.raises(resp.ProtocolError):
        link.request(b"PING\r\n", 5.0)
    theirs.sendall(b"$10\r\nabc")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError):
        link.request(b"PING\r\n", 5.0)
    link.close()
    assert owner.disconnects == 1


def test_no_reply_within_the_limit_is_a_timeout(
    pair: tuple[resp.Link, socket.socket, Owner],
) -> None:
    link, theirs, _ = pair
    with pytest.raises(TimeoutError):
        link.request(b"PING\r\n", 0.01)
    assert link.timeout == 0.01  # the socket's timeout follows the limit
    theirs.sendall(b"$4\r\nab")  # then a partial reply: the rest is bounded too
    with pytest.raises(TimeoutError):
        link.request(b"PING\r\n", 0.01)


def test_replies_to_requests_sent_without_waiting_are_read_first_in_order(
    pair: tuple[resp.Link, socket.socket, Owner],
) -> None:
    """Two requests sent without waiting, then one with: the three replies may come in
    one piece or in many; the link reads the first two (keeping the error one), then
    returns the third, and keeps no byte past it."""
    link, theirs, _ = pair
    link.send(b"first", 1.0)
    link.send(b"second", 1.0)
    assert link.pending == 2
    theirs.sendall(b":1\r\n-READONLY no\r\n$3\r\nabc\r\n")  # all three at once
    assert link.request(b"third", 1.0) == b"abc"
    assert link.pending == 0 and link.buf == b""
    assert [e.code for e in link.late_errors] == ["READONLY"]
    assert theirs.recv(100) == b"firstsecondthird"
    link.late_errors.clear()
    link.send(b"fourth", 1.0)
    theirs.sendall(b":7\r\n$5\r\nhel")  # the next reply cut short, its rest later
    threading.Timer(0.05, lambda: theirs.sendall(b"lo\r\n:9\r\n")).start()
    assert link.request(b"fifth", 1.0) == b"hello"
    assert link.buf == b":9\r\n"  # a byte past the reply is kept for the next one
    assert link.request(b"sixth", 1.0) == 9


def test_replies_read_late_share_the_requests_time_limit(
    pair: tuple[resp.Link, socket.socket, Owner],
) -> None:
    """Ten replies still to read, the server giving one every 50 ms: the request's
    limit (0.2 s) bounds all the reads together, not each of them, so it fails
    before half of them arrived."""
    link, theirs, _ = pair
    for _ in range(10):
        link.send(b"x", 1.0)

    def trickle() -> None:
        for _ in range(11):
            time.sleep(0.05)
            try:
                theirs.sendall(b":1\r\n")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    with pytest.raises(TimeoutError):
        link.request(b"y", 0.2)
    assert link.pending > 5
