"""The REST API of ``zpydb web`` against a real uvicorn process (zpydb/rest.py, zpydb/web/).

Every test talks HTTP to a real server on 127.0.0.1 and checks the database
with a separate client (tests/webtools.py).  The basics run on the embedded
FileStorage, a real runzeo and PostgreSQL; the details on the file backend.
"""

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from tests.conftest import BACKENDS
from tests.webtools import start_site

pytestmark = pytest.mark.timeout(600)

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    return start_site(request.param, tmp_path_factory.mktemp(request.param), request)


@pytest.fixture(scope="module")
def fsite(request, tmp_path_factory):
    """The file backend, for the tests of details (one server for the module)."""
    return start_site("file", tmp_path_factory.mktemp("file"), request)


def q(text):
    return urllib.parse.quote(text, safe="")


# -- the methods, on every backend ----------------------------------------------------------

def test_put_get_patch_post_delete(site):
    ann = {"name": "Ann", "tags": ["a", "b"], "age": 30}
    assert site.send("PUT", "/crud/users/ann.json", ann) == (200, ann)
    assert site.value("crud", "users", "ann") == ann
    assert site.get("/crud/users/ann.json") == ann
    assert site.get("/crud/users/ann/tags/1.json") == "b"
    assert site.get("/crud/users/nobody.json") is None

    assert site.send("PATCH", "/crud/users/ann.json", {"age": 31, "city": "Oslo"})[0] == 200
    assert site.value("crud", "users", "ann") == dict(ann, age=31, city="Oslo")

    status, answer = site.send("POST", "/crud/users/ann/tags.json", "c")
    assert (status, answer) == (200, {"name": 2})
    assert site.value("crud", "users", "ann", "tags") == ["a", "b", "c"]
    status, answer = site.send("POST", "/crud/messages.json", {"text": "hi"})
    assert status == 200 and len(answer["name"]) == 20
    assert site.value("crud", "messages") == {answer["name"]: {"text": "hi"}}

    assert site.send("DELETE", "/crud/users/ann/city.json") == (200, None)
    assert "city" not in site.value("crud", "users", "ann")
    assert site.send("DELETE", "/crud.json") == (200, None)
    assert site.value("crud") is None


def test_each_write_is_one_noted_undoable_transaction(site):
    site.send("PUT", "/undoable.json", {"v": 1})
    site.send("PATCH", "/undoable.json", {"v": 2, "w": 3})
    notes = [entry["note"] for entry in site.history(2)]
    assert notes == ["PATCH /undoable.json", "PUT /undoable.json"]
    if site.kind == "file":  # the server holds the file: undo through it
        assert site.send("POST", "/.undo") == (200, {"undone": "undo: PATCH /undoable.json"})
    else:  # undone by any client, like any other change
        with site.open() as db:
            db.undo()
    assert site.value("undoable") == {"v": 1}
    status, answer = site.send("POST", "/.redo")
    assert (status, answer) == (200, {"redone": "redo: PATCH /undoable.json"})
    assert site.value("undoable") == {"v": 2, "w": 3}
    history = site.get("/.history.json?n=3")
    assert [entry["note"] for entry in history] == [
        "redo: PATCH /undoable.json", "undo: PATCH /undoable.json", "PATCH /undoable.json"]
    assert {entry["kind"] for entry in history} == {"redo", "undo", "write"}
    assert all(entry["time"][:2] == "20" for entry in history)


def test_undo_and_redo_with_nothing_to_do_are_409(fsite):
    fsite.send("PUT", "/u409.json", 1)
    fsite.send("POST", "/.redo")  # whatever is redoable
    status, answer = fsite.send("POST", "/.redo")
    assert status == 409 and "nothing to redo" in answer["error"]


# -- locations ---------------------------------------------------------------------------------

def test_keys_need_no_escaping_except_slash_dot_tilde(fsite):
    keys = ["a b", "ü€😀", "a.b", "a.json", "%", "?x", "#", XSS, "a/b", ".hidden", "~t", "", "5"]
    for number, key in enumerate(keys):
        segment = q(key) if key and key[0] not in ".~" else "~" + q(json.dumps(key))
        assert fsite.send("PUT", f"/keys/{segment}.json", number)[0] == 200, key
    assert fsite.value("keys") == {key: number for number, key in enumerate(keys)}
    assert fsite.get("/keys/" + q("a/b") + ".json") == keys.index("a/b")
    assert fsite.get("/keys/~" + q('""') + ".json") == keys.index("")


def test_non_string_keys_are_written_with_a_tilde(fsite):
    fsite.send("PUT", "/typed.json", {"$dict": [[5, "five"], [7, "seven"]]})
    assert fsite.value("typed") == {5: "five", 7: "seven"}
    assert fsite.get("/typed/~5.json") == "five"
    assert fsite.get("/typed/5.json") is None  # the str '5' is another key
    assert fsite.get("/typed.json") == {"$dict": [[5, "five"], [7, "seven"]]}
    fsite.send("PUT", "/typed/~9.json", "nine")
    assert fsite.value("typed", 9) == "nine"
    fsite.send("PUT", "/bkeys.json", {"$dict": [[{"$bytes": "AAE="}, 1], [{"$bytes": "AAI="}, 2]]})
    assert fsite.get("/bkeys/~" + q('{"$bytes":"AAE="}') + ".json") == 1
    fsite.send("PUT", "/tkeys.json", {"$dict": [[{"$tuple": [1, "a"]}, "t"]]})
    assert fsite.value("tkeys") == {(1, "a"): "t"}
    assert fsite.get("/tkeys/~" + q('{"$tuple":[1,"a"]}') + ".json") == "t"
    fsite.send("PUT", "/flags.json", {"$dict": [[True, "yes"]]})
    assert fsite.get("/flags/~true.json") == "yes"


def test_values_json_cannot_express_round_trip_as_tags(fsite):
    document = {"b": {"$bytes": "AAEC"}, "t": {"$tuple": [1, {"$tuple": ["x"]}]},
                "big": {"$int": hex(10 ** 5000)}, "dollar": {"$dict": [["$bytes", 1]]}}
    assert fsite.send("PUT", "/tags.json", document)[0] == 200
    assert fsite.value("tags") == {"b": b"\x00\x01\x02", "t": (1, ("x",)), "big": 10 ** 5000,
                                   "dollar": {"$bytes": 1}}
    assert fsite.get("/tags.json") == document


def test_list_items_are_indexes_and_other_segments_are_refused(fsite):
    fsite.send("PUT", "/list.json", ["a", "b", "c"])
    assert fsite.get("/list/0.json") == "a"
    assert fsite.get("/list/~2.json") == "c"
    assert fsite.get("/list/3.json") is None
    for bad in ("x", "-1", "01", "~-1", "~1.0", "~true"):
        status, answer = fsite.send("GET", f"/list/{bad}.json")
        assert status == 400 and "numbered 0, 1" in answer["error"], bad
    fsite.send("PUT", "/list/1.json", "B")
    assert fsite.value("list") == ["a", "B", "c"]
    status, answer = fsite.send("PUT", "/list/5.json", "x")
    assert status == 400 and "out of range" in answer["error"]
    fsite.send("DELETE", "/list/0.json")
    assert fsite.value("list") == ["B", "c"]


def test_missing_dicts_above_a_put_are_created(fsite):
    fsite.send("PUT", "/deep/a/b/c.json", 1)
    assert fsite.value("deep") == {"a": {"b": {"c": 1}}}


def test_nothing_below_a_scalar(fsite):
    fsite.send("PUT", "/scalar.json", "text")
    assert fsite.get("/scalar/0.json") is None  # a str is not a container here
    status, answer = fsite.send("PUT", "/scalar/x.json", 1)
    assert status == 400 and "not a dict or list" in answer["error"]
    assert fsite.value("scalar") == "text"


# -- PUT, PATCH, POST, DELETE details -------------------------------------------------------------

def test_null_deletes_like_firebase(fsite):
    fsite.send("PUT", "/nulls.json", {"a": 1, "b": 2, "l": [1, None, 3]})
    assert fsite.value("nulls", "l") == [1, None, 3]  # None inside a value is stored
    assert fsite.send("PUT", "/nulls/a.json", None) == (200, None)
    assert fsite.value("nulls") == {"b": 2, "l": [1, None, 3]}
    fsite.send("PATCH", "/nulls.json", {"b": None, "c": 3})
    assert fsite.value("nulls") == {"c": 3, "l": [1, None, 3]}


def test_patch_multi_path_and_on_nothing(fsite):
    fsite.send("PUT", "/p.json", {"x": {"keep": 1, "y": 0}})
    status, answer = fsite.send("PATCH", "/p.json", {"x/y": 2, "z/w": 3})
    assert (status, answer) == (200, {"x/y": 2, "z/w": 3})
    assert fsite.value("p") == {"x": {"keep": 1, "y": 2}, "z": {"w": 3}}
    fsite.send("PATCH", "/pnew.json", {"a": 1})
    assert fsite.value("pnew") == {"a": 1}
    fsite.send("PUT", "/plist.json", [1, 2])
    fsite.send("PATCH", "/plist.json", {"1": 20})
    assert fsite.value("plist") == [1, 20]
    assert fsite.send("PATCH", "/p.json", {}) == (200, {})


def test_patch_refusals_change_nothing(fsite):
    fsite.send("PUT", "/pr.json", {"x": {"y": 1}})
    for body, words in (([1], "JSON object"), ("x", "JSON object"),
                        ({"x": 1, "x/y": 2}, "overlap"), ({"a//b": 1}, "empty path segment")):
        status, answer = fsite.send("PATCH", "/pr.json", body)
        assert status == 400 and words in answer["error"], (body, answer)
    fsite.send("PUT", "/prs.json", 5)
    status, answer = fsite.send("PATCH", "/prs.json", {"a": 1})
    assert status == 400 and "PUT replaces it" in answer["error"]
    assert fsite.value("pr") == {"x": {"y": 1}} and fsite.value("prs") == 5


def test_post_keys_are_unique_and_sort_in_time_order(fsite):
    names = [fsite.send("POST", "/pushed.json", number)[1]["name"] for number in range(60)]
    assert len(set(names)) == 60 and names == sorted(names)
    stored = fsite.value("pushed")
    assert list(stored) == names and list(stored.values()) == list(range(60))
    fsite.send("PUT", "/scalarpost.json", 1)
    status, answer = fsite.send("POST", "/scalarpost.json", 2)
    assert status == 400


def test_put_at_the_root_replaces_everything_and_must_be_an_object(tmp_path, request):
    site = start_site("file", tmp_path, request)
    site.send("PUT", "/a.json", 1)
    status, answer = site.send("PUT", "/.json", [1, 2])
    assert status == 400 and "PUT an object" in answer["error"]
    assert site.send("PUT", "/.json", {"b": 2})[0] == 200
    assert site.value() == {"b": 2}
    assert site.send("DELETE", "/.json") == (200, None)
    assert site.value() == {}
    site.send("POST", "/.undo")
    assert site.value() == {"b": 2}


# -- query parameters ----------------------------------------------------------------------------

def test_shallow(fsite):
    fsite.send("PUT", "/sh.json", {"d": {"x": {"deep": 1}}, "l": [1, [2]], "s": "str", "n": 3})
    assert fsite.get("/sh.json?shallow=true") == {"d": True, "l": True, "n": True, "s": True}
    assert fsite.get("/sh/l.json?shallow=true") == {"0": True, "1": True}
    assert fsite.get("/sh/s.json?shallow=true") == "str"
    assert fsite.get("/sh/missing.json?shallow=true") is None
    assert fsite.get("/sh.json?shallow=values") == {
        "d": {"$shallow": {"type": "dict"}}, "l": {"$shallow": {"type": "list", "size": 2}},
        "n": 3, "s": "str"}
    assert fsite.get("/sh/l.json?shallow=values") == [1, {"$shallow": {"type": "list", "size": 1}}]
    fsite.send("PUT", "/shd.json", {"$dict": [[1, {"a": 1}], [2, "b"]]})
    assert fsite.get("/shd.json?shallow=values") == {
        "$dict": [[1, {"$shallow": {"type": "dict"}}], [2, "b"]]}
    fsite.send("PUT", "/shu.json", {"$dict": [["$shallow", {"a": 1}]]})  # a user's own $ key
    assert fsite.get("/shu.json?shallow=values") == {"$dict": [["$shallow", {"$shallow": {"type": "dict"}}]]}
    status, answer = fsite.send("GET", "/sh.json?shallow=yes")
    assert status == 400 and "shallow must be" in answer["error"]
    status, answer = fsite.send("PUT", "/sh.json?shallow=true", 1)
    assert status == 400 and fsite.value("sh", "n") == 3


@pytest.fixture(scope="module", params=[b for b in BACKENDS if b in ("file", "zeo")])
def tsite(request, tmp_path_factory):
    """A file and a ZEO server, for reads of the past (?at=)."""
    return start_site(request.param, tmp_path_factory.mktemp(request.param), request)


def later_than(moment):
    """Wait (bounded) until the local clock has passed ``moment``, so the next commit's
    transaction id is later than it."""
    deadline = time.monotonic() + 10
    while datetime.datetime.now() <= moment and time.monotonic() < deadline:
        time.sleep(0.002)
    assert datetime.datetime.now() > moment


def test_at_reads_the_value_as_it_was_by_id_and_by_time(tsite):
    tsite.send("PUT", "/past.json", {"cfg": {"port": 1, "hosts": ["a"]}, "x": "old"})
    first = tsite.get("/.history.json?n=1")[0]
    later_than(datetime.datetime.fromisoformat(first["time"]) + datetime.timedelta(milliseconds=2))
    between = datetime.datetime.now().isoformat()  # naive: local time, as the server reads it
    later_than(datetime.datetime.fromisoformat(between))
    tsite.send("PATCH", "/past/cfg.json", {"port": 2, "hosts": None})
    tsite.send("DELETE", "/past/x.json")
    second = tsite.get("/.history.json?n=1")[0]
    assert first["id"] < second["id"]
    old = {"cfg": {"port": 1, "hosts": ["a"]}, "x": "old"}
    assert tsite.get(f"/past.json?at={first['id']}") == old
    assert tsite.get(f"/past.json?at={q(between)}") == old
    aware = datetime.datetime.fromisoformat(between).astimezone(datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
    assert tsite.get(f"/past.json?at={q(aware.isoformat())}") == old  # a zone, its + as %2B
    assert tsite.get(f"/past/cfg/hosts/0.json?at={first['id'].upper()}") == "a"
    assert tsite.get(f"/past/x.json?at={first['id']}") == "old"
    assert tsite.get(f"/past.json?at={second['id']}") == {"cfg": {"port": 2}}
    assert tsite.get("/past.json") == {"cfg": {"port": 2}}
    assert tsite.get(f"/past/x.json?at={second['id']}") is None  # deleted by then
    assert tsite.get(f"/past.json?at={q(datetime.datetime.now().isoformat())}") == {"cfg": {"port": 2}}
    assert tsite.get(f"/past.json?at={time.time() + 3600}") == {"cfg": {"port": 2}}  # the future: now
    assert tsite.get(f"/past.json?at={first['id']}&shallow=true") == {"cfg": True, "x": True}
    assert tsite.get(f"/past/cfg.json?at={first['id']}&shallow=values") == {
        "hosts": {"$shallow": {"type": "list", "size": 1}}, "port": 1}
    status, headers, data = tsite.request("GET", f"/past.json?at={first['id']}&print=pretty")
    assert status == 200 and json.loads(data) == old and b"\n" in data
    status, headers, data = tsite.request("HEAD", f"/past.json?at={first['id']}")
    assert status == 200 and data == b"" and int(headers["content-length"]) > 0
    assert tsite.value("past") == {"cfg": {"port": 2}}  # reading the past wrote nothing
    assert tsite.history(1)[0]["id"] == second["id"]


@pytest.mark.parametrize("at, words", [
    ("yesterday", "at must be an id"), ("", "at must be an id"), ("nan", "at must be an id"),
    ("0x12", "at must be an id"), ("123456789abcdefg", "at must be an id"),
    ("2024-13-01", "at must be an id"), ("1e999", "none of these"),
    ("9" * 400, "none of these"),
])
def test_bad_at_values_are_400(tsite, at, words):
    status, answer = tsite.send("GET", f"/past.json?at={q(at)}")
    assert status == 400 and words in answer["error"], (status, answer)


def test_at_before_the_kept_history_is_410(tsite):
    tsite.send("PUT", "/kept.json", 1)
    for at in ("0000000000000000", "1971-01-01T00:00:00", "86400"):
        status, answer = tsite.send("GET", f"/kept.json?at={at}")
        assert status == 410 and "is not kept" in answer["error"], (at, status, answer)
        assert "oldest state kept" in answer["error"]


def test_at_on_a_write_or_a_stream_is_400_and_writes_nothing(tsite):
    tsite.send("PUT", "/atw.json", {"v": 1})
    moment = tsite.get("/.history.json?n=1")[0]["id"]
    for method in ("PUT", "PATCH", "POST", "DELETE"):
        status, answer = tsite.send(method, f"/atw.json?at={moment}", {"v": 2})
        assert status == 400 and "at is for GET only" in answer["error"], (method, answer)
    status, answer = tsite.send("GET", f"/atw.json?at={moment}", headers={
        "Accept": "text/event-stream"})
    assert status == 400 and "stream follows the present" in answer["error"]
    assert tsite.value("atw") == {"v": 1}
    assert tsite.history(1)[0]["id"] == moment


def test_print_pretty_and_silent(fsite):
    fsite.send("PUT", "/pr2.json", {"a": [1]})
    status, _headers, body = fsite.request("GET", "/pr2.json?print=pretty")
    assert status == 200 and body == b'{\n  "a": [\n    1\n  ]\n}'
    status, _headers, body = fsite.request("GET", "/pr2.json")
    assert body == b'{"a":[1]}'
    status, _headers, body = fsite.request("PUT", "/pr2.json?print=silent", b"2")
    assert (status, body) == (204, b"") and fsite.value("pr2") == 2
    status, _headers, body = fsite.request("GET", "/pr2.json?print=ugly")
    assert status == 400
    status, _headers, body = fsite.request("GET", "/pr2.json?orderBy=x")
    assert status == 400 and b"unknown query parameter" in body
    assert fsite.request("GET", "/pr2.json?n=1")[0] == 400  # n is the history's
    assert fsite.request("POST", "/.undo?shallow=true")[0] == 400
    assert fsite.request("GET", "/.history.json?n=1&print=pretty")[0] == 200


def test_head_answers_like_get_without_a_body(fsite):
    fsite.send("PUT", "/head.json", {"a": 1})
    status, headers, body = fsite.request("HEAD", "/head.json")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(b'{"a":1}'))


# -- ETags ------------------------------------------------------------------------------------------

def etag_of(site, path):
    status, headers, body = site.request("GET", path, headers={"X-Firebase-ETag": "true"})
    assert status == 200
    return headers["etag"], json.loads(body)


def test_etags(fsite):
    fsite.send("PUT", "/e1.json", {"a": [1, 2]})
    fsite.send("PUT", "/e2.json", {"a": [1, 2]})
    tag1, value = etag_of(fsite, "/e1.json")
    assert value == {"a": [1, 2]} and tag1.startswith('"') and tag1 == etag_of(fsite, "/e2.json")[0]
    assert "etag" not in fsite.request("GET", "/e1.json")[1]  # only when asked
    null_tag = etag_of(fsite, "/nothing/here.json")[0]
    assert null_tag == etag_of(fsite, "/nothing2.json")[0] != tag1

    # a stale ETag: 412 with the current ETag and value, nothing written
    fsite.send("PUT", "/e1/a/0.json", 5)
    status, headers, body = fsite.request("PUT", "/e1.json", b'"x"', {"if-match": tag1})
    assert status == 412 and json.loads(body) == {"a": [5, 2]}
    assert headers["etag"] == etag_of(fsite, "/e1.json")[0] != tag1
    assert fsite.value("e1") == {"a": [5, 2]}
    # the current one (quoted or bare, as Firebase sends it): written, new ETag on request
    current = headers["etag"]
    status, headers, body = fsite.request("PUT", "/e1.json", b'"x"',
                                          {"if-match": current.strip('"'), "X-Firebase-ETag": "true"})
    assert status == 200 and fsite.value("e1") == "x"
    assert headers["etag"] == etag_of(fsite, "/e1.json")[0]
    # DELETE and the other writes too; the null ETag means "only if nothing is there"
    status, _h, _b = fsite.request("DELETE", "/e1.json", headers={"if-match": current})
    assert status == 412 and fsite.value("e1") == "x"
    assert fsite.request("DELETE", "/e1.json", headers={"if-match": headers["etag"]})[0] == 200
    assert fsite.value("e1") is None
    assert fsite.request("PUT", "/e3.json", b"1", {"if-match": null_tag})[0] == 200
    assert fsite.request("PUT", "/e3.json", b"2", {"if-match": null_tag})[0] == 412
    assert fsite.request("PATCH", "/e3.json", b'{"a":1}', {"if-match": null_tag})[0] == 412
    assert fsite.request("PUT", "/e3.json", b"3", {"if-match": "*"})[0] == 200
    assert fsite.request("PUT", "/e4.json", b"3", {"if-match": "*"})[0] == 412
    assert fsite.value("e3") == 3 and fsite.value("e4") is None


def test_if_match_increments_from_many_clients_lose_nothing(fsite):
    """8 clients x 15 read-ETag-then-PUT-if-match increments each: all 120 land."""
    fsite.send("PUT", "/counter.json", 0)
    clients, each = 8, 15
    done, errors, retries = [], [], []

    def client():
        deadline = time.monotonic() + 240
        conn = fsite.connection()
        try:
            for _ in range(each):
                for attempt in range(500):  # bounded: a conflict loop cannot spin forever
                    if time.monotonic() > deadline:
                        raise TimeoutError("increment loop ran out of time")
                    status, headers, body = fsite.request(
                        "GET", "/counter.json", headers={"X-Firebase-ETag": "true"}, connection=conn)
                    tag, value = headers["etag"], json.loads(body)
                    status, _h, _b = fsite.request("PUT", "/counter.json", str(value + 1),
                                                   {"if-match": tag}, connection=conn)
                    if status == 200:
                        done.append(1)
                        break
                    assert status == 412, status
                    retries.append(1)
                else:
                    raise AssertionError("500 attempts without success")
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert len(done) == clients * each
    assert fsite.value("counter") == clients * each


def test_concurrent_puts_and_posts_from_many_clients_all_land(site):
    clients, each = 8, 10
    errors = []

    def client(number):
        conn = site.connection()
        try:
            for item in range(each):
                status, _h, _b = site.request("PUT", f"/many/c{number}/{item}.json",
                                              str(item), connection=conn)
                assert status == 200, status
                status, _h, body = site.request("POST", "/many_list.json",
                                                json.dumps([number, item]), connection=conn)
                assert status == 200, (status, body)
        except Exception as exc:
            errors.append(exc)
        finally:
            conn.close()

    site.send("PUT", "/many_list.json", [])
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    many = site.value("many")
    assert many == {f"c{n}": {str(i): i for i in range(each)} for n in range(clients)}
    assert sorted(map(tuple, site.value("many_list"))) == sorted(
        (n, i) for n in range(clients) for i in range(each))


def test_post_answers_the_index_the_item_got_under_concurrency(fsite):
    fsite.send("PUT", "/indexed.json", ["start"])
    answers, errors = [], []

    def client(number):
        conn = fsite.connection()
        try:
            for item in range(10):
                status, _h, body = fsite.request("POST", "/indexed.json",
                                                 json.dumps(f"{number}-{item}"), connection=conn)
                assert status == 200
                answers.append((json.loads(body)["name"], f"{number}-{item}"))
        except Exception as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    stored = fsite.value("indexed")
    assert len(stored) == 61
    for index, item in answers:
        assert stored[index] == item


# -- hostile input: 400/405/413, and nothing written -------------------------------------------------

def assert_nothing_written(site, do):
    before_value, before_history = site.value(), site.history(3)
    result = do()
    assert site.value() == before_value
    assert site.history(3) == before_history
    return result


BAD_BODIES = [
    (b"not json", "not valid JSON"),
    (b"NaN", "not strict JSON"),
    (b'{"a": Infinity}', "not strict JSON"),
    (b"1e400", "too large for a float"),
    (b"\xef\xbb\xbf{}", "byte order mark"),
    ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "deeper than zpydb stores"),
    (b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}", "nested too deeply"),
    (b'{"$bytes": "not base64!"}', "malformed"),
    (b'{"$int": "12"}', "malformed"),
    (b"", "no body"),
    (b"   ", "no body"),
]


@pytest.mark.parametrize("body,words", BAD_BODIES, ids=[w for _, w in BAD_BODIES])
def test_bad_bodies_are_400_and_write_nothing(fsite, body, words):
    fsite.send("PUT", "/victim.json", {"keep": True})
    for method in ("PUT", "PATCH", "POST"):
        status, _h, data = assert_nothing_written(
            fsite, lambda: fsite.request(method, "/victim.json", body))
        assert status == 400, (method, status, data)
        assert words in json.loads(data)["error"], data


BAD_PATHS = [
    ("/a//b.json", "empty path segment"),
    ("/a/../b.json", "cannot start with '.'"),
    ("/a/./b.json", "cannot start with '.'"),
    ("/a/%2e%2e/b.json", "cannot start with '.'"),
    ("/~[1].json", "is not a key"),
    ("/~nan.json", "key as JSON"),
    ("/~null.json", "is not a key"),
    ("/%ff.json", "not UTF-8"),
    ("/a", "ends in .json"),
    ("/a/b", "ends in .json"),
    ("/" + "a/" * 120 + "b.json", "at most 100 levels"),
]


@pytest.mark.parametrize("path,words", BAD_PATHS, ids=[p[:30] for p, _ in BAD_PATHS])
def test_bad_paths_are_400_and_write_nothing(fsite, path, words):
    for method in ("GET", "PUT", "DELETE"):
        body = None if method != "PUT" else b"1"
        status, _h, data = assert_nothing_written(fsite, lambda: fsite.request(method, path, body))
        assert status == 400, (method, path, status, data)
        assert words in json.loads(data)["error"], data


def test_unstorable_values_are_400_and_write_nothing(fsite):
    fsite.send("PUT", "/strkeys.json", {"a": 1})
    status, answer = assert_nothing_written(fsite, lambda: fsite.send("PUT", "/strkeys/~5.json", 1))
    assert status == 400 and "cannot be ordered" in answer["error"]
    deep = json.loads("[" * 99 + "]" * 99)
    status, answer = assert_nothing_written(fsite, lambda: fsite.send("PUT", "/x/y/z.json", deep))
    assert status == 400 and "100" in answer["error"]
    status, answer = assert_nothing_written(
        fsite, lambda: fsite.send("PUT", "/mixed.json", {"$dict": [[1, 1], ["a", 2]]}))
    assert status == 400 and "cannot be ordered" in answer["error"]
    status, answer = assert_nothing_written(
        fsite, lambda: fsite.send("PUT", "/.json", {"ok": 1, "bad": {"$dict": [[1, 1], ["a", 2]]}}))
    assert status == 400


@pytest.mark.parametrize("method,path,allow", [
    ("OPTIONS", "/x.json", None), ("TRACE", "/x.json", None), ("PROPFIND", "/x.json", None),
    ("GET", "/.undo", "POST"), ("PUT", "/.redo", "POST"), ("POST", "/.history.json", "GET, HEAD"),
    ("PUT", "/", "GET, HEAD"), ("DELETE", "/.console/console.js", "GET, HEAD")])
def test_methods_not_allowed_are_405(fsite, method, path, allow):
    status, headers, data = assert_nothing_written(fsite, lambda: fsite.request(method, path, b"1"))
    assert status == 405 and "not allowed" in json.loads(data)["error"]
    if allow:
        assert headers["allow"] == allow
    else:
        assert "PUT" in headers["allow"] and "DELETE" in headers["allow"]


@pytest.mark.parametrize("n", ["%C2%B2", "%D9%A8", "-1", "1001", "1.5", "", "x"])
def test_history_n_must_be_ascii_digits(fsite, n):
    """'\u00b2'.isdigit() is True and int() refuses it: a 400, not a 500."""
    status, _h, data = fsite.request("GET", f"/.history.json?n={n}")
    assert status == 400 and "n must be a whole number" in json.loads(data)["error"], data


def test_unknown_pages_are_404_json(fsite):
    status, _h, data = fsite.request("GET", "/.console/secret.txt")
    assert status == 404 and "error" in json.loads(data)


def test_bodies_over_the_limit_are_413_and_read_no_further(tmp_path, request):
    site = start_site("file", tmp_path, request, "--max-body", "1000")
    big = json.dumps("x" * 2000).encode()
    status, _h, data = site.request("PUT", "/big.json", big)
    assert status == 413 and "at most 1,000" in json.loads(data)["error"]
    # no Content-Length (chunked): counted while reading
    conn = site.connection()
    try:
        conn.putrequest("PUT", "/big.json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(3):
            chunk = b'"' + b"y" * 600 + b'"' if _ == 0 else b" " * 600
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        assert response.status == 413 and b"over 1,000" in response.read()
    finally:
        conn.close()
    assert site.value("big") is None
    assert site.send("PUT", "/big.json", "x" * 900)[0] == 200


def send_head(site, head, chunk=64 * 1024):
    """Send ``head`` (a request's first bytes) in chunks; the status line the server
    answered with and how many bytes it took before it closed (or all of them)."""
    import socket
    sent = 0
    with socket.create_connection((site.host, site.port), timeout=60) as sock:
        try:
            while sent < len(head):
                sock.sendall(head[sent:sent + chunk])
                sent += chunk
        except OSError:  # the server closed the connection: what did it say?
            pass
        answer = b""
        try:
            while part := sock.recv(65536):
                answer += part
        except OSError:
            pass
    return answer.split(b"\r\n", 1)[0], min(sent, len(head)), answer


@pytest.mark.parametrize("where", ["header", "url", "many headers"])
def test_a_huge_request_head_is_431_and_not_buffered(fsite, where):
    """httptools (uvicorn's parser) buffers a header or URL of any size: one client
    sending 300 MB of header grew the server by 360 MB. The head is limited to 64 KiB."""
    big = 8 * 1024 * 1024
    if where == "header":
        head = b"GET /x.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * big
    elif where == "url":
        head = b"GET /" + b"a" * big
    else:
        head = b"GET /x.json HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * (big // 8)
    status_line, sent, answer = send_head(fsite, head)
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
    assert b"64 KiB" in answer and sent < big  # refused long before it was all sent
    # a head just under the limit is fine, and the server still answers
    fine = (b"GET /x.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 60_000 +
            b"\r\nConnection: close\r\n\r\n")
    assert send_head(fsite, fine)[0] == b"HTTP/1.1 200 OK"


HEAD_TIMEOUT = 3  # --head-timeout of the test's server (the default, 30 s, is checked below)


def test_connections_that_send_no_whole_head_are_closed(request, tmp_path):
    """Without a head timeout an idle or half-sent connection stayed open for good: enough
    of them (no token needed) exhaust the server's file descriptors. 408 after
    --head-timeout seconds (3 here: the default is 30)."""
    import socket
    from zpydb.web import DEFAULT_HEAD_TIMEOUT
    assert DEFAULT_HEAD_TIMEOUT == 30
    fsite = start_site("file", tmp_path, request, "--head-timeout", str(HEAD_TIMEOUT))
    sockets = {name: socket.create_connection((fsite.host, fsite.port), timeout=5)
               for name in ("idle", "half a head", "a byte a second")}
    sockets["half a head"].sendall(b"GET /x.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    slow = iter(b"GET /x.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000)
    started, answers = time.monotonic(), {}
    while len(answers) < len(sockets) and time.monotonic() - started < 4 * HEAD_TIMEOUT:
        for name, sock in sockets.items():
            if name in answers:
                continue
            try:
                if name == "a byte a second":  # a byte every pass (~1 s)
                    sock.sendall(bytes([next(slow)]))
                sock.settimeout(1 / len(sockets))
                answers[name] = (sock.recv(65536), time.monotonic() - started)
            except socket.timeout:
                pass
            except OSError as exc:
                answers[name] = (repr(exc).encode(), time.monotonic() - started)
    for sock in sockets.values():
        sock.close()
    assert set(answers) == set(sockets), answers
    for name, (answer, elapsed) in answers.items():
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), (name, answer)
        assert b"within 3 s" in answer, answer
        assert HEAD_TIMEOUT - 1 < elapsed < 3 * HEAD_TIMEOUT, (name, elapsed)
    assert fsite.request("GET", "/.json")[0] == 200


def test_big_bodies_and_pipelined_requests_are_not_mistaken_for_a_head(fsite):
    """The head limit counts only head bytes: a body many reads long, and requests
    sent back to back on one connection, are answered as before."""
    value = "x" * (6 * 1024 * 1024)
    for method, path in (("PUT", "/bigbody/put.json"), ("POST", "/bigbody.json")):
        status, _h, data = fsite.request(method, path, json.dumps(value))
        assert status == 200, (method, status, data[:200])
    assert fsite.value("bigbody", json.loads(data)["name"]) == value
    one = b'PUT /piped.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s'
    body = json.dumps("y" * 100_000).encode()
    piped = b"".join(one % (len(body), body) for _ in range(20)) + (
        b"GET /piped.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status_line, _sent, answer = send_head(fsite, piped, chunk=len(piped))
    assert answer.count(b"HTTP/1.1 200 OK") == 21 and b"431" not in answer, answer[-300:]


def test_unicode_and_lone_surrogates(fsite):
    value = {"text": "Grüße, 日本語, emoji 😀, rtl עברית", "zero": "a\x00b", "sur": "\ud800"}
    status, _h, _b = fsite.request("PUT", "/uni/" + q("ключ") + ".json",
                                   json.dumps(value, ensure_ascii=True))
    assert status == 200
    assert fsite.value("uni", "ключ") == value
    status, headers, body = fsite.request("GET", "/uni/" + q("ключ") + ".json")
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == value


def test_host_and_origin_checks_without_tokens(fsite):
    status, _h, data = fsite.request("GET", "/.json", headers={"Host": "evil.example:80"})
    assert status == 403 and "answers only requests to 127.0.0.1" in json.loads(data)["error"]
    for host in (f"localhost:{fsite.port}", "127.0.0.1", f"127.1.2.3:{fsite.port}",
                 f"[::1]:{fsite.port}"):
        assert fsite.request("GET", "/.json", headers={"Host": host})[0] == 200, host
    for host in ("", "localhost.evil.example", "127.0.0.1.nip.io:80", "[::2]:80", "0.0.0.0"):
        assert fsite.request("GET", "/.json", headers={"Host": host})[0] == 403, host
    status, _h, _d = assert_nothing_written(fsite, lambda: fsite.request(
        "POST", "/csrf.json", b"1", {"Origin": "http://evil.example"}))
    assert status == 403
    own = f"http://127.0.0.1:{fsite.port}"
    assert fsite.request("PUT", "/csrf.json", b"1", {"Origin": own})[0] == 200
    status, headers, _d = fsite.request("GET", "/csrf.json")
    assert headers["x-content-type-options"] == "nosniff"


def test_stored_files_travel_as_tagged_base64(fsite):
    document = {"$file": {"name": "a.txt", "content_type": "text/plain",
                          "base64": "aGVsbG8=", "size": 5,
                          "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}}
    assert fsite.send("PUT", "/files/a.json", document)[0] == 200
    with fsite.open() as db:
        assert db["files"]["a"].value().read() == b"hello"
    assert fsite.get("/files/a.json") == {"$file": dict(document["$file"])}
    listing = fsite.get("/files.json?shallow=values")
    assert "base64" not in listing["a"]["$file"] and listing["a"]["$file"]["size"] == 5
    status, answer = fsite.send("PUT", "/files/b.json", {"$file": {"name": "x", "path": "/etc/passwd",
                                                                   "size": 1, "sha256": "0" * 64}})
    assert status == 400 and fsite.value("files", "b") is None


def test_web_requests_ride_out_a_zeo_restart(tmp_path, request):
    site = start_site("zeo", tmp_path, request)
    site.send("PUT", "/before.json", 1)
    site.zeo.stop()
    status, answer = site.send("GET", "/before.json")
    assert status == 503 and "error" in answer
    site.zeo.start()
    deadline = time.monotonic() + 60
    while True:  # the client reconnects by itself (ZEO polls about every second)
        status, answer = site.send("PUT", "/after.json", 2)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    assert site.get("/before.json") == 1 and site.value("after") == 2


# -- the command ---------------------------------------------------------------------------------------

def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(os.path.dirname(os.path.dirname(__file__))), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "zpydb", "web", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=env)


@pytest.mark.parametrize("address", ["0.0.0.0:8110", "192.0.2.1:8110", "example.org:8110",
                                     "[::]:8110"])
def test_without_tokens_only_loopback_addresses(tmp_path, address):
    result = run_cli(str(tmp_path / "x.fs"), "--address", address)
    assert result.returncode == 2 and "loopback only" in result.stderr, result.stderr
    assert not (tmp_path / "x.fs").exists()


@pytest.mark.parametrize("args,words", [
    (["--address", "nonsense"], "HOST:PORT"),
    (["--address", "127.0.0.1:99999"], "HOST:PORT"),
    (["--address", "127.0.0.1:8\u00b2"], "HOST:PORT"),        # isdigit() but not int()
    (["--address", "127.0.0.1:\u0668\u0661\u0661\u0660"], "HOST:PORT"),  # Arabic-Indic 8110
    (["--tls-cert", "missing.pem", "--tls-key", "missing.pem"], "no such --tls-cert file"),
    (["--tls-cert", __file__], "go together"),
    (["--tokens", "missing.json"], "no such --tokens file"),
    (["--max-body", "0"], "--max-body"),
    (["--threads", "0"], "--threads"),
    (["--head-timeout", "0"], "--head-timeout"),
    (["--head-timeout", "nan"], "--head-timeout"),
])
def test_bad_arguments_are_one_line_and_create_nothing(tmp_path, args, words):
    result = run_cli(str(tmp_path / "x.fs"), *args, cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.fs").exists()


# -- crashes, shutdown, slow clients ---------------------------------------------------------------------

def test_sigterm_closes_the_database(tmp_path, request):
    import zpydb
    site = start_site("file", tmp_path, request)
    site.send("PUT", "/kept.json", {"a": 1})
    assert site.server.stop() == 0  # SIGTERM: uvicorn drains, then the database is closed
    with zpydb.connect(site.url) as db:  # the lock is released: a writer can open it
        assert db["kept"].value() == {"a": 1}
        db["after"] = 2


def test_acknowledged_writes_survive_kill_9(tmp_path, request):
    """A writer records each PUT only after its 200; SIGKILL the server at random moments
    (5 times); every acknowledged write is in the reopened database, which checks clean."""
    import random
    import signal

    import zpydb
    path = tmp_path / "Data.fs"
    acked = []
    for round_number in range(5):
        site = start_site("file", tmp_path, request)
        stop = threading.Event()

        def writer():
            conn = site.connection(timeout=10)
            number = 0
            while not stop.is_set() and number < 100_000:
                key = f"r{round_number}-{number}"
                try:
                    status, _h, _b = site.request("PUT", f"/kill/{key}.json", str(number),
                                                  connection=conn)
                except (OSError, http_client_errors()):
                    return
                if status == 200:
                    acked.append((key, number))
                number += 1

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(random.uniform(0.3, 1.0))
        os.kill(site.server.process.pid, signal.SIGKILL)
        site.server.process.wait(30)
        stop.set()
        thread.join(60)
        site.server.process = None
    assert acked, "no write was acknowledged"
    check = subprocess.run([sys.executable, "-m", "ZODB.scripts.fstest", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    with zpydb.connect(str(path)) as db:
        stored = db["kill"].value()
    missing = [key for key, number in acked if stored.get(key) != number]
    assert not missing, missing[:10]


def http_client_errors():
    import http.client
    return http.client.HTTPException


def test_slow_clients_do_not_hold_up_the_others(fsite):
    """50 connections that send half a request and wait do not stop a normal one."""
    import socket
    slow = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", fsite.port), timeout=10)
            sock.sendall(b"PUT /slow.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            slow.append(sock)
        started = time.monotonic()
        assert fsite.send("PUT", "/fast.json", 1) == (200, 1)
        assert fsite.get("/fast.json") == 1
        assert time.monotonic() - started < 30
    finally:
        for sock in slow:
            sock.close()
    assert fsite.value("slow") is None
