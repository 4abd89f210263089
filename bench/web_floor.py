"""The floor for H1: the same server stack as ``zpydb web`` answering a constant.

``python -m bench.web_floor PORT``: Starlette on uvicorn (httptools, no access
log, the same settings as zpydb/web/__init__.py), one async route that reads
the request body (for PUT) and answers ``{"floor":true}`` without touching a
database or a worker thread.  What ``zpydb web`` measures above this is the
cost of zpydb itself (a worker thread, a ZODB transaction, JSON).
"""

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"floor":true}'


async def constant(request):
    await request.body()
    return Response(BODY, media_type="application/json; charset=utf-8")


app = Starlette(routes=[Route("/{rest:path}", constant, methods=["GET", "PUT"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, lifespan="off", server_header=False)
