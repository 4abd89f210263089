"""The HTTP/1.1 connection of ``zpydb web``: uvicorn's httptools protocol, with a
limit on the size of a request's head (request line and headers).

httptools (uvicorn's fast parser) buffers a header value or a URL of any size
until it ends, and uvicorn adds no limit of its own for it (its h11 protocol
has one): a single client, before any token is checked, could send an endless
header and grow the server by as much (300 MB of header grew it by 360 MB).
So the bytes a connection sends while a head is incomplete are counted, and
past :data:`MAX_HEAD` the answer is 431 and the connection is closed.

Nor does uvicorn time out a connection that sends nothing, or half a head,
and then waits: each holds a file descriptor forever, and enough of them
(from anyone who can connect, before any token is checked) stop the server
from accepting.  A head must arrive whole within :data:`HEAD_TIMEOUT`
seconds of the connection (or of its first byte); otherwise 408 and closed.
Idle keep-alive connections between requests are uvicorn's (5 s).
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import DEFAULT_HEAD_TIMEOUT as HEAD_TIMEOUT  # seconds: ``zpydb web --head-timeout``

#: The largest request head taken (the request line and all headers): as nginx's
#: 4 x 8k large_client_header_buffers, with room for long paths and tokens.
MAX_HEAD = 64 * 1024
_MESSAGE = (b'{"error":"the request line and headers are over 64 KiB, the most this server '
            b'takes"}')


def bounded_protocol(head_timeout=HEAD_TIMEOUT):
    """The protocol class uvicorn builds per connection, with this head timeout."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,),
                {"head_timeout": head_timeout})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that answers 431 once a request head passes MAX_HEAD bytes.

    Only a chunk in which no head and no message ended is counted whole as
    head (a chunk that ends one may also carry a body, or end a body and start
    the next head), so a connection holds at most MAX_HEAD plus one read's
    worth of head.
    """

    head_timeout = HEAD_TIMEOUT  # seconds: bounded_protocol() makes the served class

    def connection_made(self, transport):
        self._in_head, self._head_bytes, self._boundaries = True, 0, 0
        self._head_timer = None
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc):
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self):
        super().on_message_begin()
        self._start_head_timer()  # the first byte of a head: it has head_timeout to end

    def on_headers_complete(self):
        self._in_head, self._head_bytes = False, 0
        self._boundaries += 1
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self):
        super().on_message_complete()
        self._in_head = True  # what comes next is the head of the next request
        self._boundaries += 1

    def data_received(self, data):
        boundaries = self._boundaries
        super().data_received(data)
        if not self._in_head or self._boundaries != boundaries or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD:
            self._refuse(431, b"Request Header Fields Too Large", _MESSAGE)

    def _start_head_timer(self):
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self):
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # still answering the previous request (uvicorn reads no further meanwhile):
            # the next head's time starts again
            self._start_head_timer()
        elif self._in_head and not self.transport.is_closing():
            self._refuse(408, b"Request Timeout",
                         b'{"error":"the request line and headers did not arrive within '
                         b'%g s"}' % self.head_timeout)

    def _refuse(self, status, reason, message):
        self._cancel_head_timer()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(message), message))
        self.transport.close()
