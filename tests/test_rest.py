"""zpydb/rest.py without HTTP: locations, push IDs, and the REST methods against a model.

The model is Firebase's REST semantics on plain dicts and lists (null deletes,
missing dicts above a PUT are created, POST appends or adds a key), written
here from the documentation; hypothesis runs random sequences of requests on
both and compares the trees after every request, including requests that must
fail (then nothing may have changed).
"""

import copy
import json
import string
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zpydb
from zpydb import export, rest
from zpydb.errors import Error, PreconditionFailedError, RequestError

# -- locations ---------------------------------------------------------------------------------

def segment_for(key):
    """What the console (console.js segmentOfKey) writes for a dict key."""
    if isinstance(key, str) and key and key[0] not in ".~":
        return urllib.parse.quote(key, safe="")
    return "~" + urllib.parse.quote(json.dumps(export.encode(key)), safe="")


scalar_keys = st.one_of(st.text(max_size=12), st.integers(), st.booleans(),
                        st.binary(max_size=8),
                        st.floats(allow_nan=False, allow_infinity=False))
keys = st.one_of(scalar_keys, st.tuples(scalar_keys, scalar_keys))


@given(st.lists(keys, min_size=1, max_size=5))
def test_every_key_has_a_segment_that_names_it(path):
    location = rest.parse_location("/" + "/".join(segment_for(k) for k in path) + ".json")
    got = [segment.dict_key() for segment in location.segments]
    assert got == path
    assert [type(k) for k in got] == [type(k) for k in path]


def test_raw_paths_split_before_decoding():
    location = rest.parse_location(b"/a%2Fb/c%20d/%E2%82%AC.json")
    assert [s.dict_key() for s in location.segments] == ["a/b", "c d", "€"]
    assert rest.parse_location("/.json").segments == ()


@pytest.mark.parametrize("path", ["/a//b.json", "/./a.json", "/a/...json", "/~.json",
                                  "/~{}.json", "/~%7B%22%24dict%22%3A%5B%5D%7D.json", "/x",
                                  "a.json", "/%C3.json", "/~[1].json"])
def test_bad_locations(path):
    with pytest.raises(RequestError):
        rest.parse_location(path)


# -- push IDs ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


@given(st.lists(st.integers(0, 5), min_size=2, max_size=200))
def test_push_ids_sort_in_creation_order_even_in_one_millisecond(steps):
    times, now = [], 1_700_000_000.0
    for step in steps:  # the same millisecond, the next ones, and a clock stepping back
        now += (step - 1) / 1000 if step else 0
        times.append(now)
    make = rest.PushIds(clock=FakeClock(times))
    made = [make() for _ in times]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(key) == 20 and set(key) <= set(rest.PUSH_CHARS) for key in made)


def test_push_id_random_part_carries_over():
    class Rigged:
        def randrange(self, n):
            return n - 1  # every random character at its largest
    make = rest.PushIds(clock=lambda: 1.0, rng=Rigged())
    first, second = make(), make()
    assert first < second and first[8:] == "z" * 12 and second[8:] == "z" * 12
    assert second[:8] > first[:8]  # the next millisecond, rather than wrapping around


def test_push_ids_of_one_process_are_unique_under_threads():
    import threading
    made, make = [], rest.PushIds()

    def worker():
        made.extend(make() for _ in range(2000))
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(set(made)) == 8000


# -- the methods against a model -------------------------------------------------------------------

class ModelError(Exception):
    pass


MISSING = object()
NAMES = ["a", "b", "0", "1"]


def m_child(node, segment, strict_list=True):
    if isinstance(node, dict):
        return node.get(segment, MISSING)
    if isinstance(node, list):
        if not segment.isdigit() or (len(segment) > 1 and segment[0] == "0"):
            raise ModelError("a list item is a number")
        index = int(segment)
        return node[index] if index < len(node) else MISSING
    return MISSING  # below a scalar: nothing


def m_get(tree, path):
    node = tree
    for segment in path:
        if node is MISSING:
            return None
        node = m_child(node, segment)
    return None if node is MISSING else node


def m_put(tree, path, value):
    if value is None:
        return m_delete(tree, path)
    if not path:
        if not isinstance(value, dict):
            raise ModelError("the root is a dict")
        tree.clear()
        tree.update(value)
        return
    node = tree
    for number, segment in enumerate(path[:-1]):
        following = m_child(node, segment)
        if following is MISSING:
            if isinstance(node, list) or not isinstance(node, dict):
                raise ModelError("cannot create in a list or below a scalar")
            for inner in reversed(path[number + 1:]):
                value = {inner: value}
            node[segment] = value
            return
        node = following
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list):
        if m_child(node, last) is MISSING:
            raise ModelError("index out of range")
        node[int(last)] = value
    else:
        raise ModelError("below a scalar")


def m_delete(tree, path):
    if not path:
        tree.clear()
        return
    node = tree
    for segment in path[:-1]:
        node = m_child(node, segment)
        if not isinstance(node, (dict, list)):
            return  # nothing there, or a scalar: nothing to delete
    if m_child(node, path[-1]) is not MISSING:
        del node[path[-1] if isinstance(node, dict) else int(path[-1])]


def m_check_location(tree, path):
    """PATCH/POST on ``path``: errors of walking it, and whether it is below a scalar."""
    node = tree
    for segment in path:
        if node is MISSING:
            return MISSING
        if not isinstance(node, (dict, list)):
            raise ModelError("below a scalar")
        node = m_child(node, segment)
    return node


def m_patch(tree, path, changes):
    node = m_check_location(tree, path)
    if node is not MISSING and not isinstance(node, (dict, list)):
        raise ModelError("PATCH of a scalar")
    for key, value in changes.items():
        m_put(tree, path + [key], value)


def m_post(tree, path, value, name):
    node = m_check_location(tree, path)
    if isinstance(node, list):
        node.append(value)
        return len(node) - 1
    if node is not MISSING and not isinstance(node, dict):
        raise ModelError("POST to a scalar")
    m_put(tree, path + [name], value)
    return name


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                         st.text(alphabet=string.ascii_letters, max_size=3))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner,
                                                               max_size=3),
    max_leaves=8)
paths = st.lists(st.sampled_from(NAMES), max_size=3)
requests = st.one_of(
    st.tuples(st.just("PUT"), paths, json_values),
    st.tuples(st.just("PATCH"), paths, st.dictionaries(st.sampled_from(NAMES), json_values,
                                                       max_size=3)),
    st.tuples(st.just("POST"), paths, json_values.filter(lambda v: v is not None)),
    st.tuples(st.just("DELETE"), paths, st.none()),
    st.tuples(st.just("GET"), paths, st.none()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=12))
def test_rest_methods_match_the_model(sequence):
    db = zpydb.connect("memory://")
    posts = []  # the service makes one new key per POST request, as it will be named here
    service = rest.Service(db, new_key=lambda: f"k{len(posts):03d}")
    model = {}
    try:
        for method, path, value in sequence:
            location = rest.parse_location("/" + "/".join(path) + ".json")
            expected, after = None, copy.deepcopy(model)
            try:
                if method == "GET":
                    expected = m_get(after, path)
                elif method == "PUT":
                    m_put(after, path, value)
                elif method == "PATCH":
                    m_patch(after, path, value)
                elif method == "POST":
                    expected = {"name": m_post(after, path, value, f"k{len(posts):03d}")}
                else:
                    m_delete(after, path)
                model_error = None
            except ModelError as exc:
                model_error = exc
            try:
                if method == "GET":
                    got = service.get(location)[0]
                else:
                    body = None if method == "DELETE" else json.dumps(value).encode()
                    got = service.write(method, location, body)[0]
                error = None
            except Error as exc:
                error = exc
            if method == "POST":
                posts.append(1)
            state = db.value()
            assert (error is None) == (model_error is None), (method, path, value, error,
                                                               model_error, model)
            if error is None:
                if method in ("GET", "POST"):
                    assert got == expected, (method, path, got, expected)
                model = after
            assert state == model, (method, path, value, state, model)
    finally:
        db.close()


# -- ETags -------------------------------------------------------------------------------------------

@given(json_values)
def test_equal_values_have_equal_etags(value):
    assert rest.etag(value) == rest.etag(copy.deepcopy(value))
    assert rest.etag(value) != rest.etag([value])


def test_if_match_forms():
    tag = rest.etag({"a": 1})
    assert rest.matches(tag, tag, True) and rest.matches(tag.strip('"'), tag, True)
    assert rest.matches(f'"other", {tag}', tag, True)
    assert rest.matches("*", tag, True) and not rest.matches("*", tag, False)
    assert not rest.matches("W/" + tag, tag, True)
    assert not rest.matches('"other"', tag, True)


def test_a_failed_precondition_carries_the_current_value_and_etag():
    db = zpydb.connect("memory://")
    try:
        service = rest.Service(db)
        location = rest.parse_location("/x.json")
        service.write("PUT", location, b'{"a": 1}')
        with pytest.raises(PreconditionFailedError) as caught:
            service.write("PUT", location, b"2", if_match='"stale"')
        assert caught.value.current == {"a": 1}
        assert caught.value.etag == rest.etag({"a": 1}) == service.current_etag(location)
        assert db["x"].value() == {"a": 1}
    finally:
        db.close()


def test_a_stored_nan_is_a_clear_error_not_invalid_json():
    db = zpydb.connect("memory://")
    try:
        db["m"] = {"ok": 1, "bad": [float("nan")]}
        service = rest.Service(db)
        with pytest.raises(Error, match=r"db\['bad'\]\[0\].*JSON has no NaN"):
            rest.render(service.get(rest.parse_location("/m.json"))[0])
        assert rest.render(service.get(rest.parse_location("/m/ok.json"))[0]) == b"1"
        # the ETag still covers it, so if-match works on such values too
        assert service.current_etag(rest.parse_location("/m.json")).startswith('"')
    finally:
        db.close()
