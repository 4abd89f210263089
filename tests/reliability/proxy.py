"""A loopback TCP proxy in front of a ZEO server that cuts the connection at a
chosen moment of a commit (a lost reply, a lost request), once per ``arm()``.

* ``arm("finish")`` - forward the client's ``tpc_finish`` to the server, then
  swallow the server's next message (its reply: by then the transaction is
  committed on disk) and cut both sides.  The client cannot know the outcome
  from the wire; the data says it committed.
* ``arm("vote")``   - do NOT forward the client's ``vote``; cut both sides.  The
  server aborts the transaction: nothing was applied.
* ``arm("next")``   - do NOT forward the client's next message, whatever it is (the
  first contact of the next statement: ``server_sync``'s ping); cut both sides.
* ``arm("stall", marker=b"vote")`` - from the marker on, forward nothing from the
  client and cut nothing: a server that stopped answering (paused, a black hole).

Other connections (reconnects) are forwarded untouched.  In front of PostgreSQL,
``arm("finish", marker=b"COMMIT")`` loses the reply to RelStorage's COMMIT.  Threads are daemons;
``close()`` stops accepting and closes every socket.
"""

import socket
import threading

from tests.servers import HOST

MARKERS = {"finish": b"tpc_finish", "vote": b"vote", "next": b"", "stall": b"vote"}


class _Relay:
    """A listening socket on loopback that connects each client to ``target`` and
    starts ``_relay(client, server)`` for the pair; ``close()`` closes every socket."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets = []
        self.closed = False

    @property
    def url(self):
        return f"zeo://{HOST}:{self.port}"

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self):
        self.closed = True
        for sock in [self.listener] + self.sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            self.sockets += [client, server]
            self._relay(client, server)  # each subclass's own pair of pumps


class DropProxy(_Relay):
    def __init__(self, target):
        super().__init__(target)
        self.armed = None
        self.fired = []

    def arm(self, trigger, marker=None):
        """Cut at the next ``trigger``; ``marker`` replaces the bytes that identify it
        (e.g. ``b"COMMIT"`` in front of PostgreSQL)."""
        if trigger not in MARKERS:
            raise ValueError(trigger)
        with self.lock:
            self.armed = trigger
            self.marker = MARKERS[trigger] if marker is None else marker

    # -- internals ----------------------------------------------------------
    def _relay(self, client, server):
        pair = {"state": None, "client": client, "server": server}
        threading.Thread(target=self._upstream, args=(pair,), daemon=True).start()
        threading.Thread(target=self._downstream, args=(pair,), daemon=True).start()

    def _cut(self, pair):
        for name in ("client", "server"):
            try:
                pair[name].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                pair[name].close()
            except OSError:
                pass

    def _upstream(self, pair):
        window = b""
        while True:
            try:
                data = pair["client"].recv(65536)
            except OSError:
                data = b""
            if not data:
                self._cut(pair)
                return
            window = (window + data)[-(len(data) + 16):]
            fresh = len(window) - len(data)       # where this chunk starts in the window
            with self.lock:
                trigger = self.armed
                # only a marker that ends in this chunk (the tail of the last chunk was
                # checked already, maybe before arm())
                hit = trigger and window.find(self.marker,
                                              max(0, fresh - len(self.marker) + 1)) >= 0
                if hit:
                    self.armed = None
                    self.matched = bytes(data[:2000])
            if hit and trigger == "stall":
                self.fired.append(trigger)
                self._swallow(pair)
                return
            if hit and trigger in ("vote", "next"):
                self.fired.append(trigger)
                self._cut(pair)             # the vote never reaches the server
                return
            if hit and trigger == "finish":
                pair["state"] = "swallow-reply"   # set before the server can answer
            try:
                pair["server"].sendall(data)
            except OSError:
                self._cut(pair)
                return
            window = window[-16:]

    def _swallow(self, pair):
        """Read and drop what the client sends until the proxy closes."""
        while not self.closed:
            try:
                if not pair["client"].recv(65536):
                    return
            except OSError:
                return

    def _downstream(self, pair):
        while True:
            try:
                data = pair["server"].recv(65536)
            except OSError:
                data = b""
            if not data:
                self._cut(pair)
                return
            if pair["state"] == "swallow-reply":
                self.fired.append("finish")
                self._cut(pair)             # committed on the server; the reply is lost
                return
            try:
                pair["client"].sendall(data)
            except OSError:
                self._cut(pair)
                return


class HoldProxy(_Relay):
    """A loopback TCP proxy that can hold back what the server sends to the client.

    ``hold()``: from now on, bytes from the server are kept (``held`` counts
    them) instead of forwarded -- the invalidations the server pushes after
    another client's commit, and the replies to this client's own requests;
    ``release()`` sends what was kept and forwards again.  ``sent`` counts the
    bytes the client sent, so a test can wait until a statement reached the
    wire.  A client behind it sees the server exactly as late as a slow network
    would show it.  Threads are daemons; ``close()`` closes every socket.
    """

    def __init__(self, target):
        super().__init__(target)
        self.holding = False
        self.kept = []   # (client socket, bytes) held back, in order
        self.held = 0
        self.sent = 0

    def hold(self):
        with self.lock:
            self.holding = True
            self.held = 0

    def release(self):
        with self.lock:
            self.holding = False
            kept, self.kept = self.kept, []
            for client, data in kept:  # under the lock: nothing overtakes them
                try:
                    client.sendall(data)
                except OSError:
                    pass

    def _relay(self, client, server):
        threading.Thread(target=self._pump, args=(client, server, False),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, True),
                         daemon=True).start()

    def _pump(self, source, sink, from_server):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                for sock in (source, sink):
                    try:
                        sock.close()
                    except OSError:
                        pass
                return
            with self.lock:
                if from_server and self.holding:
                    self.kept.append((sink, data))
                    self.held += len(data)
                    continue
                if not from_server:
                    self.sent += len(data)
                try:
                    sink.sendall(data)
                except OSError:
                    pass
