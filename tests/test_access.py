"""Tokens (zpydb/access.py) and TLS of ``zpydb web``, against a real uvicorn process."""

import hashlib
import hmac
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from zpydb import access, rest
from zpydb.certs import make_dev_certs
from zpydb.errors import AuthenticationError, Error
from tests.webtools import start_site

pytestmark = pytest.mark.timeout(300)

ADMIN, ANN, WRITER, READER = ("admin-secret-0123456789", "ann-secret-0123456789",
                              "writer-secret-0123456789", "reader-secret-0123456789")
TOKENS = {"tokens": [
    {"name": "admin", "secret": ADMIN, "read": ["/"], "write": ["/"]},
    {"name": "ann", "secret": ANN, "read": ["/users/ann", "/public"], "write": ["/users/ann"]},
    {"name": "writer", "secret": WRITER, "read": [], "write": ["/inbox"]},
    {"name": "reader", "secret": READER, "read": ["/"]},
]}


@pytest.fixture(scope="module")
def secured(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secured")
    (tmp / "tokens.json").write_text(json.dumps(TOKENS))
    site = start_site("file", tmp, request, "--tokens", tmp / "tokens.json", "--log-requests")
    site.send("PUT", "/.json", {"users": {"ann": {"name": "Ann"}, "bob": {"name": "Bob"}},
                                "public": {"motd": "hi"}}, headers=bearer(ADMIN))
    return site


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_no_token_or_a_wrong_one_is_401(secured):
    for headers in ({}, bearer("wrong-secret-0123456789"), bearer(ADMIN + "x"),
                    {"Authorization": f"Basic {ADMIN}"}, {"Authorization": "Bearer "}):
        status, answer_headers, data = secured.request("GET", "/users.json", headers=headers)
        assert status == 401, headers
        assert answer_headers["www-authenticate"].startswith("Bearer")
        assert "token" in json.loads(data)["error"].lower()
    status, _h, _d = secured.request("GET", "/users.json?auth=nope")
    assert status == 401


def test_bearer_header_and_auth_parameter_both_work(secured):
    assert secured.get("/users/ann/name.json", headers=bearer(ANN)) == "Ann"
    assert secured.get(f"/users/ann/name.json?auth={ANN}") == "Ann"


def test_read_prefixes(secured):
    assert secured.get("/users/ann.json", headers=bearer(ANN)) == {"name": "Ann"}
    assert secured.get("/public/motd.json", headers=bearer(ANN)) == "hi"
    for path in ("/users/bob.json", "/users.json", "/.json", "/users/annie.json",
                 "/users/~%22ann%22x.json"):
        status, answer = secured.send("GET", path, headers=bearer(ANN))
        assert status in (403, 400), (path, status)
    status, answer = secured.send("GET", "/users/bob.json", headers=bearer(ANN))
    assert status == 403 and "may not read /users/bob.json" in answer["error"]
    # a typed segment naming the same str key is the same place
    assert secured.get("/users/~%22ann%22.json", headers=bearer(ANN)) == {"name": "Ann"}
    # writing does not imply reading
    assert secured.send("GET", "/inbox.json", headers=bearer(WRITER))[0] == 403


def test_reads_of_the_past_need_read_like_reads_of_now(secured):
    moment = secured.get("/.history.json?n=1", headers=bearer(ADMIN))[0]["id"]
    assert secured.get(f"/users/ann.json?at={moment}", headers=bearer(ANN)) == {"name": "Ann"}
    for path in ("/users/bob.json", "/.json", "/users.json"):
        status, answer = secured.send("GET", f"{path}?at={moment}", headers=bearer(ANN))
        assert status == 403 and "may not read" in answer["error"], (path, answer)
    assert secured.send("GET", f"/users/ann.json?at={moment}")[0] == 401
    assert secured.send("GET", f"/inbox.json?at={moment}", headers=bearer(WRITER))[0] == 403


def test_write_prefixes_and_nothing_written_when_refused(secured):
    assert secured.send("PUT", "/users/ann/age.json", 30, headers=bearer(ANN))[0] == 200
    assert secured.value("users", "ann", "age") == 30
    for method, path in (("PUT", "/users/bob/name.json"), ("DELETE", "/users.json"),
                         ("POST", "/users.json"), ("PUT", "/.json"), ("PATCH", "/public.json")):
        status, answer = secured.send(method, path, {"x": 1} if method != "DELETE" else None,
                                      headers=bearer(ANN))
        assert status == 403 and "may not write" in answer["error"], (method, path)
    assert secured.send("PUT", "/public/motd.json", "x", headers=bearer(READER))[0] == 403
    assert secured.value("users", "bob") == {"name": "Bob"} and secured.value("public", "motd") == "hi"
    assert secured.send("POST", "/inbox.json", "hello", headers=bearer(WRITER))[0] == 200


def test_patch_above_a_prefix_needs_every_child_inside_it(secured):
    status, _ = secured.send("PATCH", "/users.json", {"ann/city": "Oslo"}, headers=bearer(ANN))
    assert status == 200 and secured.value("users", "ann", "city") == "Oslo"
    status, answer = secured.send("PATCH", "/users.json", {"ann/city": "Rome", "bob/name": "B"},
                                  headers=bearer(ANN))
    assert status == 403 and "may not write /users/bob/name.json" in answer["error"]
    assert secured.value("users", "ann", "city") == "Oslo"
    assert secured.value("users", "bob", "name") == "Bob"


def test_a_conditional_write_never_shows_what_the_token_may_not_read(secured):
    """A 412 answers the current value and its ETag: a token that may write but not
    read a place (or a PATCH above its write prefix) must not get them that way."""
    attempts = [("PATCH", "/users.json", {"ann/x": 1}, ANN),       # above ann's prefix: bob too
                ("PUT", "/inbox.json", "x", WRITER),                # write-only
                ("DELETE", "/inbox.json", None, WRITER),
                ("POST", "/inbox.json", "x", WRITER)]
    secured.send("PUT", "/inbox.json", {"private": "letter"}, headers=bearer(ADMIN))
    for method, path, value, secret in attempts:
        for extra in ({"if-match": '"nope"'}, {"if-match": "*"}, {"X-Firebase-ETag": "true"}):
            body = None if value is None else json.dumps(value)
            status, headers, data = secured.request(method, path, body,
                                                    dict(bearer(secret), **extra))
            assert status == 403, (method, path, extra, status, data)
            assert b"Bob" not in data and b"letter" not in data and "etag" not in headers
            assert "may not read" in json.loads(data)["error"]
    assert secured.value("users", "bob") == {"name": "Bob"}
    assert secured.value("inbox") == {"private": "letter"}
    # where the token may read too, conditional writes work as before
    status, headers, _d = secured.request("PUT", "/users/ann/c.json", b"1",
                                          dict(bearer(ANN), **{"X-Firebase-ETag": "true"}))
    assert status == 200 and headers["etag"]
    status, headers, data = secured.request("PUT", "/users/ann/c.json", b"2",
                                            dict(bearer(ANN), **{"if-match": '"nope"'}))
    assert status == 412 and json.loads(data) == 1


def test_the_token_name_is_the_changes_user(secured):
    secured.send("PUT", "/users/ann/mood.json", "good", headers=bearer(ANN))
    entry = secured.history(1)[0]
    assert (entry["user"], entry["note"]) == ("ann", "PUT /users/ann/mood.json")
    history = secured.get("/.history.json?n=1", headers=bearer(ADMIN))
    assert history[0]["user"] == "ann"


def test_undo_redo_need_write_to_everything_history_read(secured):
    for method, path in (("POST", "/.undo"), ("POST", "/.redo")):
        for secret in (ANN, READER):
            status, answer = secured.send(method, path, headers=bearer(secret))
            assert status == 403, (path, secret)
    assert secured.send("GET", "/.history.json", headers=bearer(ANN))[0] == 403
    assert secured.send("GET", "/.history.json", headers=bearer(READER))[0] == 200
    assert secured.send("POST", "/.history.json", headers=bearer(ADMIN))[0] == 405
    secured.send("PUT", "/users/ann/undo-me.json", 1, headers=bearer(ANN))
    status, answer = secured.send("POST", "/.undo", headers=bearer(ADMIN))
    assert status == 200 and secured.value("users", "ann", "undo-me") is None
    assert secured.history(1)[0]["user"] == "admin"


def test_no_host_check_with_tokens(secured):
    status, _h, _d = secured.request("GET", "/public.json",
                                     headers=dict(bearer(ANN), Host="db.example.org"))
    assert status == 200


def test_the_log_never_shows_a_secret(secured):
    secured.request("GET", f"/public.json?auth={ANN}&print=pretty")
    secured.request("GET", "/public.json", headers=bearer(ANN))
    log = secured.server.log()
    assert "GET /public.json?auth=***&print=pretty 200 ann" in log
    assert ANN not in log and ADMIN not in log
    # Starlette percent-decodes parameter names: %61uth is auth, and must be hidden too
    for query in (f"%61uth={ANN}", f"a%75th={ANN}", f"print=pretty&%61%75%74%68={ANN}"):
        status, _h, _d = secured.request("GET", f"/public.json?{query}")
        assert status == 200, query  # the secret was taken as the token...
    assert ANN not in secured.server.log()  # ...and is not in the log


def test_console_page_needs_no_token_and_holds_no_data(secured):
    status, headers, body = secured.request("GET", "/")
    assert status == 200 and b"zpydb console" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert b"Ann" not in body


# -- the tokens file -----------------------------------------------------------------------------

@pytest.mark.parametrize("document,words", [
    ([], "expected"),
    ({"tokens": []}, "expected"),
    ({"tokens": [{"name": "a", "secret": "short"}]}, "at least 16"),
    ({"tokens": [{"name": "", "secret": "x" * 16}]}, "non-empty"),
    ({"tokens": [{"name": "a", "secret": "x" * 16, "admin": True}]}, "unknown or missing: admin"),
    ({"tokens": [{"name": "a", "secret": "x" * 16, "read": "/"}]}, "list of path prefixes"),
    ({"tokens": [{"name": "a", "secret": "x" * 16, "read": ["users"]}]}, "must start with /"),
    ({"tokens": [{"name": "a", "secret": "x" * 16, "read": ["/a/../b"]}]}, "cannot start with '.'"),
    ({"tokens": [{"name": "a", "secret": "x" * 16}, {"name": "a", "secret": "y" * 16}]}, "used twice"),
    ({"tokens": [{"name": "a", "secret": "x" * 16}, {"name": "b", "secret": "x" * 16}]}, "same secret"),
    ({"tokens": [{"name": "a", "secret": "x" * 16}], "more": 1}, "expected"),
    # a header carries bytes Starlette reads as latin-1, and is stripped: such a secret
    # would never match as 'Authorization: Bearer ...'
    ({"tokens": [{"name": "a", "secret": "p\u00e4ssw\u00f6rd-0123456789"}]}, "visible ASCII"),
    ({"tokens": [{"name": "a", "secret": " leading-space-0123456789"}]}, "visible ASCII"),
    ({"tokens": [{"name": "a", "secret": "inner space 0123456789"}]}, "visible ASCII"),
    ({"tokens": [{"name": "a", "secret": "tab\t0123456789abcdef"}]}, "visible ASCII"),
])
def test_bad_tokens_files_are_refused_with_a_reason(document, words):
    with pytest.raises(Error, match=words):
        access.parse(document, "t.json")


def test_a_key_given_twice_in_the_tokens_file_is_refused(tmp_path):
    """JSON keeps the last of two equal keys: a second "write" would silently win."""
    entry = ('{"name": "a", "secret": "%s", "write": ["/users/a"], "write": ["/"]}' % ("x" * 16))
    for text in ('{"tokens": [%s]}' % entry,
                 '{"tokens": [], "tokens": [{"name": "a", "secret": "%s"}]}' % ("x" * 16)):
        (tmp_path / "t.json").write_text(text)
        with pytest.raises(Error, match="given twice"):
            access.Tokens.load(tmp_path / "t.json")


def test_a_bad_tokens_file_stops_the_command_before_serving(tmp_path):
    (tmp_path / "t.json").write_text('{"tokens": [{"name": "a", "secret": "short"}]}')
    result = subprocess.run([sys.executable, "-m", "zpydb", "web", str(tmp_path / "x.fs"),
                             "--tokens", str(tmp_path / "t.json"), "--address", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "at least 16" in result.stderr, result.stderr


def test_every_entry_is_compared_in_constant_time(monkeypatch):
    """Each lookup hashes the secret and compares it with EVERY entry's digest through
    hmac.compare_digest, wherever (and whether) it matches: the time tells nothing."""
    tokens = access.Tokens(access.parse(TOKENS))
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", counting)
    for secret in (ADMIN, READER, "unknown-secret-000000", "x", "y" * 10_000):
        calls.clear()
        try:
            tokens.identify(secret)
        except AuthenticationError:
            pass
        assert len(calls) == len(TOKENS["tokens"])
        assert set(calls) == {(32, 32)}  # digests, not the secrets: the length says nothing
    assert tokens.identify(READER).name == "reader"
    assert hashlib.sha256(READER.encode()).digest() == tokens.identify(READER).digest


def test_prefix_matching_is_by_segment_not_by_string():
    token = access.Token("t", b"", access.parse(
        {"tokens": [{"name": "t", "secret": "x" * 16, "read": ["/users/ann"]}]})[0].read, ())
    allowed = ["/users/ann.json", "/users/ann/x/y.json", "/users/~%22ann%22.json"]
    refused = ["/users/annie.json", "/users.json", "/.json", "/users/ann%2Fx.json", "/users/~1.json"]
    for path in allowed:
        assert token.may_read(rest.parse_location(path)), path
    for path in refused:
        assert not token.may_read(rest.parse_location(path)), path


# -- TLS ---------------------------------------------------------------------------------------------

def test_https_with_a_dev_certificate(tmp_path, request):
    certs = make_dev_certs(tmp_path / "certs")
    site = start_site("file", tmp_path, request, "--tls-cert", certs["server"],
                      "--tls-key", certs["server_key"], ca=certs["ca"])
    assert site.base.startswith("https://")
    assert site.send("PUT", "/secure.json", {"a": 1}) == (200, {"a": 1})
    assert site.get("/secure.json") == {"a": 1}
    context = ssl.create_default_context(cafile=certs["ca"])
    with urllib.request.urlopen(f"{site.base}/secure/a.json", context=context, timeout=30) as response:
        assert json.loads(response.read()) == 1
    # a client that does not trust the CA refuses the server
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{site.base}/secure.json", context=ssl.create_default_context(),
                               timeout=30)
    # plain HTTP to the TLS port gets no answer
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{site.port}/secure.json", timeout=30).read()
    assert site.value("secure") == {"a": 1}
