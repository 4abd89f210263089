"""A loopback TCP proxy that counts bytes and can drop its connections.

    with Proxy(("127.0.0.1", server_port)) as proxy:
        db = zpydb.connect(f"zeo://127.0.0.1:{proxy.port}")
        before = proxy.sent_up            # bytes the clients sent to the server
        ...
        proxy.cut()                       # drop every connection (as a network failure would)

What a client sends through it is what it sent to the server: the tests use
``sent_up`` to check that an idle watcher sends no request at all, and
``cut()`` to break a client's connection without touching the server.  Every
thread is a daemon; ``close()`` stops accepting and drops every connection.
"""

import select
import socket
import threading

from devservers.ports import HOST

CHUNK = 65536


class Proxy:
    """Forward ``HOST:port`` (a free port) to ``upstream`` (host, port)."""

    def __init__(self, upstream, host=HOST):
        self.upstream = tuple(upstream)
        self._listener = socket.create_server((host, 0))
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs = []          # (client socket, upstream socket)
        self.sent_up = 0          # bytes from clients to the server
        self.sent_down = 0        # bytes from the server to clients
        self.accepted = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._thread.start()

    @property
    def address(self):
        return (self.host, self.port)

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()  # the server is down: the client sees a dropped connection
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._pairs.append((client, server))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server), daemon=True,
                             name="proxy-pump").start()

    def _pump(self, client, server):
        sockets = [client, server]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [])
                for sock in readable:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    other = server if sock is client else client
                    other.sendall(data)
                    with self._lock:
                        if sock is client:
                            self.sent_up += len(data)
                        else:
                            self.sent_down += len(data)
        except (OSError, ValueError):  # cut() closed a socket under us
            return
        finally:
            self._drop((client, server))

    def _drop(self, pair):
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self):
        """Drop every open connection (new ones are still accepted)."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)
        return len(pairs)

    def close(self):
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
