"""Server-Sent Events of ``zpydb web`` (zpydb/web/stream.py) against a real uvicorn process.

Each test reads a stream over HTTP (devservers/web.py ``EventStream``) while
writing through the REST API, and checks what a client applying the events
holds against what GET answers.  File and ZEO backends; a real runzeo is
restarted under a server with a stream open.
"""

import json
import os
import random
import signal
import time
import urllib.parse

import pytest

from tests.test_access import ADMIN, ANN, TOKENS
from tests.webtools import start_site

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=["file", "zeo"])
def site(request, tmp_path_factory):
    return start_site(request.param, tmp_path_factory.mktemp(request.param), request,
                      "--keep-alive", "0.5")


# -- a client applying the events (Firebase's rules) -------------------------------------------

def segments(path):
    """An event path -> the JSON keys it names (str keys only in these tests)."""
    parts = [part for part in path.split("/") if part]
    keys = []
    for part in parts:
        text = urllib.parse.unquote(part)
        keys.append(json.loads(text[1:]) if text.startswith("~") else text)
    return keys


def set_at(document, keys, value):
    if not keys:
        return value
    document = dict(document) if isinstance(document, dict) else {}
    child = set_at(document.get(keys[0]), keys[1:], value)
    if child is None:
        document.pop(keys[0], None)
    else:
        document[keys[0]] = child
    return document


def apply(state, kind, data):
    base = segments(data["path"])
    if kind == "put":
        return set_at(state, base, data["data"])
    assert kind == "patch", kind
    for relative, value in data["data"].items():
        state = set_at(state, base + segments(relative), value)
    return state


# -- the events ------------------------------------------------------------------------------------

def test_first_event_is_the_whole_value_then_one_event_per_change(site):
    site.send("PUT", "/s1.json", {"a": {"b": 1, "c": [1, 2]}, "x": 1})
    with site.events("/s1.json") as stream:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        kind, first_id, data = stream.next()
        assert (kind, data) == ("put", {"path": "/", "data": {"a": {"b": 1, "c": [1, 2]}, "x": 1}})
        assert len(first_id) == 16
        site.send("PATCH", "/s1.json", {"a/b": 2, "x": None})
        kind, id2, data = stream.next()
        assert (kind, data) == ("patch", {"path": "/", "data": {"a/b": 2, "x": None}})
        site.send("POST", "/s1/a/c.json", 3)   # inside a list: the whole list
        assert stream.next()[::2] == ("put", {"path": "/a/c", "data": [1, 2, 3]})
        site.send("PUT", "/elsewhere.json", 1)  # not under the path: nothing
        site.send("PUT", "/s1/a/b.json", 2)     # the same value: nothing
        site.send("PUT", "/s1/a/b.json", 5)
        kind, id4, data = stream.next()
        assert (kind, data) == ("put", {"path": "/a/b", "data": 5})
        assert first_id < id2 < id4
        site.send("DELETE", "/s1.json")
        assert stream.next()[::2] == ("put", {"path": "/", "data": None})


def test_keys_in_event_paths_are_written_as_in_urls(site):
    site.send("PUT", "/s2.json", {"a/b": {"x": 1}, "~t": {"x": 1}, "k": {"$dict": [[5, 1]]}})
    with site.events("/s2.json") as stream:
        stream.next()
        site.send("PUT", "/s2/a%2Fb/x.json", 2)
        assert stream.next()[2] == {"path": "/a%2Fb/x", "data": 2}
        site.send("PUT", "/s2/~" + urllib.parse.quote('"~t"') + "/x.json", 2)
        assert stream.next()[2] == {"path": "/~%22~t%22/x", "data": 2}
        site.send("PUT", "/s2/k/~5.json", 2)
        event = stream.next()[2]
        assert event == {"path": "/k/~5", "data": 2}
        # the event's path, appended to the stream's URL, names the place that changed
        assert site.get("/s2" + event["path"] + ".json") == 2


def test_a_client_applying_the_events_holds_what_get_answers(site):
    """Random writes, one at a time; after each, the events so far applied to the
    first put equal GET (lists, deletes, PATCH over several levels, POST)."""
    rng = random.Random(15)
    site.send("PUT", "/model.json", {"a": {"x": 1}, "l": [1, 2, 3]})
    with site.events("/model.json") as stream:
        kind, _, data = stream.next()
        state = apply(None, kind, data)
        ids = []
        for number in range(40):
            before = site.get("/model.json")
            choice = rng.randrange(6)
            key = rng.choice(["a", "b", "c"])
            if choice == 0:
                site.send("PUT", f"/model/{key}.json", {"x": number, "y": [number]})
            elif choice == 1:
                site.send("PATCH", "/model.json", {f"{key}/x": number, "l": [number, 0]})
            elif choice == 2:
                site.send("DELETE", f"/model/{key}.json")
            elif choice == 3:
                site.send("POST", "/model/l.json", number)
            elif choice == 4:
                site.send("PUT", f"/model/{key}/deep/er.json", number)
            else:
                site.send("DELETE", "/model/l/0.json")
            after = site.get("/model.json")
            if after == before:
                continue
            kind, event_id, data = stream.next()
            state = apply(state, kind, data)
            assert state == after, (number, kind, data)
            ids.append(event_id)
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and len(ids) > 20


def test_keep_alive_events_on_an_idle_stream(site):
    with site.events("/idle.json") as stream:
        assert stream.next()[::2] == ("put", {"path": "/", "data": None})
        assert stream.next(keepalives=True) == ("keep-alive", None, None)


# -- resuming ---------------------------------------------------------------------------------------

def test_last_event_id_resumes_with_the_changes_after_it(site):
    site.send("PUT", "/r.json", {"n": 0})
    with site.events("/r.json") as stream:
        kind, _, data = stream.next()
        state = apply(None, kind, data)
        site.send("PUT", "/r/n.json", 1)
        kind, _, data = stream.next()
        state = apply(state, kind, data)
        last = stream.last_id
    for n in range(2, 5):  # while nobody listens
        site.send("PUT", "/r/n.json", n)
    site.send("PUT", "/r/m.json", "x")
    with site.events("/r.json", headers={"Last-Event-ID": last}) as stream:
        got = []
        for _ in range(4):
            kind, event_id, data = stream.next()
            got.append(data)
            state = apply(state, kind, data)
        assert got[0] == {"path": "/n", "data": 2}  # no first put: the client has the value
        assert state == site.get("/r.json") == {"n": 4, "m": "x"}
        site.send("PUT", "/r/n.json", 5)
        assert stream.next()[2] == {"path": "/n", "data": 5}


def test_last_event_id_of_the_first_put_loses_nothing(site):
    site.send("PUT", "/r0.json", 1)
    with site.events("/r0.json") as stream:
        first_id = stream.next()[1]
    site.send("PUT", "/r0.json", 2)
    with site.events("/r0.json", headers={"Last-Event-ID": first_id}) as stream:
        assert stream.next()[::2] == ("put", {"path": "/", "data": 2})


@pytest.mark.parametrize("bad", ["bogus", "0" * 16, "ffffffffffffffff"])
def test_an_unknown_last_event_id_starts_over_with_the_whole_value(site, bad):
    site.send("PUT", "/r2.json", {"v": 1})
    with site.events("/r2.json", headers={"Last-Event-ID": bad}) as stream:
        assert stream.next()[::2] == ("put", {"path": "/", "data": {"v": 1}})


# -- refusals -----------------------------------------------------------------------------------------

def test_bad_stream_requests_are_json_errors(site):
    for path, status, words in [("/x.json?print=pretty", 400, "not streams"),
                                ("/x.json?shallow=true", 400, "unknown"),
                                ("/a/../b.json", 400, "cannot start with"),
                                ("/x", 400, "ends in .json")]:
        with site.events(path) as stream:
            assert stream.status == status, path
            assert words in json.loads(stream.response.read())["error"]


def test_streams_obey_the_tokens(tmp_path, request):
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    site = start_site("file", tmp_path, request, "--tokens", tmp_path / "tokens.json")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    site.send("PUT", "/users.json", {"ann": {"n": 1}, "bob": {"n": 2}}, headers=admin)
    for path, headers, status in [("/users.json", {}, 401),
                                  ("/users/bob.json", {"Authorization": f"Bearer {ANN}"}, 403),
                                  ("/users.json", {"Authorization": f"Bearer {ANN}"}, 403),
                                  ("/users/ann.json?auth=wrong-secret-000000", {}, 401)]:
        with site.events(path, headers) as stream:
            assert stream.status == status, (path, headers)
            assert "error" in json.loads(stream.response.read())
    with site.events(f"/users/ann.json?auth={ANN}") as stream:
        assert stream.next()[2] == {"path": "/", "data": {"n": 1}}
        site.send("PUT", "/users/bob/n.json", 3, headers=admin)   # not hers: not sent
        site.send("PUT", "/users/ann/n.json", 4, headers=admin)
        assert stream.next()[2] == {"path": "/n", "data": 4}


def test_max_streams(tmp_path, request):
    site = start_site("file", tmp_path, request, "--max-streams", "2")
    with site.events("/a.json") as one, site.events("/a.json") as two:
        assert one.next() and two.next()
        with site.events("/a.json") as three:
            assert three.status == 503 and "--max-streams" in three.response.read().decode()
    deadline = time.monotonic() + 60
    while True:  # the two closed streams are freed
        with site.events("/a.json") as again:
            if again.status == 200 or time.monotonic() > deadline:
                break
        time.sleep(0.1)
    assert again.status == 200


# -- closing ---------------------------------------------------------------------------------------

def threads_of(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_until(condition, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_closing_the_connection_ends_the_watcher_thread(tmp_path, request):
    site = start_site("file", tmp_path, request, "--keep-alive", "3600")
    pid = site.server.process.pid
    site.send("PUT", "/c.json", 1)
    with site.events("/c.json") as warm:  # the worker threads of a first request exist
        warm.next()
    site.get("/c.json")
    wait_until(lambda: threads_of(pid) <= 12, what="an idle server")
    baseline = threads_of(pid)
    streams = [site.events("/c.json") for _ in range(10)]
    for stream in streams:
        assert stream.next()[0] == "put"
    assert threads_of(pid) >= baseline + 10
    for stream in streams:  # the clients go away; the server never writes to them again
        stream.close()
    wait_until(lambda: threads_of(pid) <= baseline, what="the stream threads to end")
    # and the server still serves streams and changes
    with site.events("/c.json") as stream:
        stream.next()
        site.send("PUT", "/c.json", 2)
        assert stream.next()[2] == {"path": "/", "data": 2}


def test_server_shutdown_ends_the_streams(tmp_path, request):
    site = start_site("file", tmp_path, request, "--keep-alive", "3600")
    streams = [site.events("/d.json") for _ in range(3)]
    for stream in streams:
        assert stream.next()[0] == "put"
    started = time.monotonic()
    site.server.process.send_signal(signal.SIGTERM)
    for stream in streams:
        assert stream.next(timeout=60) is None   # the stream ends; no cut-off after a timeout
    assert site.server.process.wait(timeout=60) == 0
    assert time.monotonic() - started < 8  # well within uvicorn's 10 s graceful shutdown
    site.server.process = None


def test_a_stream_rides_out_a_zeo_restart(tmp_path, request):
    site = start_site("zeo", tmp_path, request)
    site.send("PUT", "/z.json", {"n": 0})
    with site.events("/z.json") as stream:
        kind, _, data = stream.next()
        state = apply(None, kind, data)
        site.send("PUT", "/z/n.json", 1)
        state = apply(state, *stream.next()[::2])
        site.zeo.stop()
        site.zeo.start()
        deadline = time.monotonic() + 60
        while True:  # the web server reconnects by itself
            status, _ = site.send("PUT", "/z/n.json", 2)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
        with site.open() as db:  # another client writes too
            db["z"]["m"] = 3
        for _ in range(2):
            state = apply(state, *stream.next()[::2])
        assert state == site.get("/z.json") == {"n": 2, "m": 3}
