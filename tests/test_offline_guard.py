"""The suite-wide network guard (conftest.py) must really refuse non-loopback connections."""

import socket

import pytest


def test_remote_connection_is_refused():
    with pytest.raises(AssertionError, match="must work offline"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)  # TEST-NET-1: never routed
    s = socket.socket()
    try:
        with pytest.raises(AssertionError, match="must work offline"):
            s.connect(("example.org", 443))
    finally:
        s.close()


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        client = socket.create_connection(server.getsockname(), timeout=1)
        client.close()
    finally:
        server.close()
