"""JSON export and import (export.py) through the command line."""

import json
import subprocess
import sys

import pytest

import zpydb
from zpydb import export


def zpydb_cmd(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zpydb", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_encode_decode_round_trip():
    value = {"s": "x", "b": b"\x00\xff", "t": (1, ("a",)), "l": [1, None, 2.5],
             "ints": {1: "one", 2: "two"}, "tuples": {("l", 4): True}}
    encoded = export.encode(value)
    json.dumps(encoded)                           # JSON-ready
    assert export.decode(json.loads(json.dumps(encoded))) == value


def test_parse_path():
    assert export.parse_path("db") == ()
    assert export.parse_path("db['a'][0][1:3]") == ("a", 0, slice(1, 3))
    assert export.parse_path("db[('l', 4)]") == (("l", 4),)
    for bad in ("x['a']", "db[f()]", "db["):
        with pytest.raises(zpydb.Error):
            export.parse_path(bad)


def test_export_import_round_trip_through_the_cli(tmp_path):
    source, target = str(tmp_path / "a.fs"), str(tmp_path / "b.fs")
    with zpydb.connect(source) as db:
        db["users"] = {"alice": {"age": 30, "tags": ["x"]}, "bob": {"age": 25, "tags": []}}
        db["raw"] = b"bytes"
        db["locks"] = {("l", 4): True}
    dump = zpydb_cmd("export", source)
    assert dump.returncode == 0, dump.stderr
    (tmp_path / "dump.json").write_text(dump.stdout)
    loaded = zpydb_cmd("import", str(tmp_path / "dump.json"), target)
    assert loaded.returncode == 0, loaded.stderr
    with zpydb.connect(source) as a, zpydb.connect(target) as b:
        assert a._run() == b._run()
        assert b.history(1)[0]["kind"] == "write"  # one transaction, undoable as one step
        b.undo()
        assert b._run() == {}


def test_export_and_import_a_path(tmp_path):
    url = str(tmp_path / "a.fs")
    with zpydb.connect(url) as db:
        db["users"] = {"alice": {"age": 30}}
    out = zpydb_cmd("export", url, "--path", "db['users']['alice']")
    assert json.loads(out.stdout) == {"age": 30}
    imported = zpydb_cmd("import", "-", url, "--path", "db['users']['bob']", input='{"age": 5}')
    assert imported.returncode == 0
    with zpydb.connect(url) as db:
        assert db["users"]["bob"]["age"]._run() == 5


def test_large_export_shows_progress_and_import_is_all_or_nothing(tmp_path):
    url = str(tmp_path / "a.fs")
    with zpydb.connect(url) as db:
        with db.transaction() as t:
            for i in range(3000):
                t[f"k{i:05}"] = i
    dump = zpydb_cmd("export", url)
    assert "export" in dump.stderr and "3000" in dump.stderr   # tqdm progress on stderr
    assert len(json.loads(dump.stdout)) == 3000
    document = json.loads(dump.stdout)
    document["zzz"] = {"$dict": [["a", 1], [2, "b"]]}   # mixed keys: fails at the last key
    bad_document = json.dumps(document)
    target = str(tmp_path / "b.fs")
    result = zpydb_cmd("import", "-", target, input=bad_document)
    assert result.returncode == 1
    with zpydb.connect(target) as db:
        assert db._run() == {}                    # nothing half-written


def test_import_rejects_non_json(tmp_path):
    result = zpydb_cmd("import", "-", str(tmp_path / "a.fs"), input="{not json")
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    result = zpydb_cmd("import", "-", str(tmp_path / "a.fs"), input='{"b": {"$bytes": "!"}}')
    assert result.returncode == 1 and "$bytes" in result.stderr and "Traceback" not in result.stderr


def _strict_loads(text):
    """json.loads as strict JSON parsers read it: NaN/Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_export_refuses_nan_and_infinity_naming_the_path(tmp_path):
    url = str(tmp_path / "a.fs")
    with zpydb.connect(url) as db:
        db["ok"] = {"pi": 3.5, "big": 1e308}
        db["m"] = {"inf": float("-inf"), "nan": float("nan")}
        db["t"] = [1, (2.0, float("inf"))]
    good = zpydb_cmd("export", url, "--path", "db['ok']")
    assert good.returncode == 0 and _strict_loads(good.stdout) == {"big": 1e308, "pi": 3.5}
    result = zpydb_cmd("export", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        "zpydb: Error: db['m']['inf']: -inf cannot be exported: JSON has no NaN or Infinity "
        "(store it as None or a string, or export another path)")
    result = zpydb_cmd("export", url, "--path", "db['t']", "-o", str(tmp_path / "t.json"))
    assert "db['t'][1][1]: inf cannot be exported" in result.stderr
    assert result.returncode == 1 and not (tmp_path / "t.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "export" in p.name) == []


def test_large_exports_are_strict_json_too(tmp_path):
    url = str(tmp_path / "a.fs")
    with zpydb.connect(url) as db:
        with db.transaction() as t:
            for i in range(export.PROGRESS_MIN_ITEMS + 10):
                t[f"k{i:05}"] = i / 3
            t["k00500"] = {"deep": [float("nan")]}
    result = zpydb_cmd("export", url, "--no-progress")
    assert result.returncode == 1 and result.stdout == ""
    assert "db['k00500']['deep'][0]: nan cannot be exported" in result.stderr
    with zpydb.connect(url) as db:
        db["k00500"] = 0.5
    result = zpydb_cmd("export", url, "--no-progress", "-o", str(tmp_path / "all.json"))
    assert result.returncode == 0, result.stderr
    assert len(_strict_loads((tmp_path / "all.json").read_text())) == export.PROGRESS_MIN_ITEMS + 10


def test_export_reads_a_file_that_another_process_has_open(tmp_path):
    """Export opens an embedded file read-only (no lock): it works beside a running shell."""
    url = str(tmp_path / "a.fs")
    with zpydb.connect(url) as db:
        db["x"] = 1
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import zpydb, sys; db = zpydb.connect({url!r}); print('ok', "
                               f"flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        result = zpydb_cmd("export", url)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"x": 1}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# -- limits: huge ints, deep nesting, hostile numbers ------------------------------------

def test_ints_past_the_decimal_digit_limit_round_trip_through_the_cli(tmp_path):
    """An int Python refuses to print (past 4300 digits) exports as {"$int": "0x..."}."""
    source, target = str(tmp_path / "a.fs"), str(tmp_path / "b.fs")
    values = {"big": 2 ** 20000, "neg": [-(3 ** 9000), 5], "small": 7}
    with zpydb.connect(source) as db:
        for key, value in values.items():
            db[key] = value
    out = zpydb_cmd("export", source, "-o", str(tmp_path / "x.json"))
    assert out.returncode == 0, out.stderr
    document = json.loads((tmp_path / "x.json").read_text())
    assert document["big"] == {"$int": hex(2 ** 20000)} and document["small"] == 7
    out = zpydb_cmd("import", str(tmp_path / "x.json"), target)
    assert out.returncode == 0, out.stderr
    with zpydb.connect(target) as db:
        assert {key: db[key]._run() for key in values} == values


@pytest.mark.parametrize("text, says", [
    ('{"x": ' + "[" * 5000 + "]" * 5000 + "}", "deeper than zpydb stores (100 levels)"),
    ('{"x": ' + "[" * 300 + "]" * 300 + "}", "nested too deeply"),
    ('{"x": ' + "9" * 5000 + "}", '{"$int": "0x..."}'),
    ('{"x": {"$int": "12"}}', "$int needs a hex string"),
    ('{"x": {"$int": ["0x1"]}}', "$int needs a hex string"),
])
def test_hostile_imports_are_refused_with_a_message_and_store_nothing(tmp_path, text, says):
    target = str(tmp_path / "b.fs")
    with zpydb.connect(target) as db:
        db["kept"] = 1
    (tmp_path / "in.json").write_text(text)
    out = zpydb_cmd("import", str(tmp_path / "in.json"), target)
    assert out.returncode != 0
    assert says in out.stderr and "Traceback" not in out.stderr, out.stderr
    with zpydb.connect(target) as db:
        assert sorted(db.keys()) == ["kept"]


# -- found by the adversarial run: tags, encodings, strict JSON on the way in --------

@pytest.mark.parametrize("value", [
    {"$tuple": [1, 2]},
    {"$bytes": "aGk="},
    {"$int": "0x10"},
    {"$dict": [[1, 2]]},
    {"$file": {"name": "x", "path": "/etc/passwd"}},
    {"$anything": 1},
], ids=["tuple", "bytes", "int", "dict", "file", "other"])
def test_export_import_round_trip_keeps_dicts_whose_key_looks_like_a_tag(tmp_path, value):
    """export.encode writes a user's dict {"$bytes": "aGk="} unescaped, and decode reads
    it back as the tagged type: a backup by export/import silently changes the data
    (the dict becomes bytes / a tuple / an int / a dict with int keys)."""
    import io
    from zpydb import export
    with zpydb.connect(str(tmp_path / "a.fs")) as src, zpydb.connect(str(tmp_path / "b.fs")) as dst:
        src["d"] = value
        buf = io.StringIO()
        export.export_json(src, stream=buf, progress=False)
        export.import_json(dst, io.StringIO(buf.getvalue()), progress=False)
        assert dst["d"]._run() == value, f"round trip changed {value!r} into {dst['d']._run()!r}"


def _run_cli(cwd, *args):
    return zpydb_cmd(*args, cwd=cwd)


def test_import_of_utf16_json_says_what_is_wrong(tmp_path):
    """A UTF-16 file fails with UnicodeDecodeError, a ValueError, which _load_json reports
    as 'the input holds a number JSON cannot read here ... write it as {"$int": ...}'."""
    (tmp_path / "u16.json").write_bytes('{"a": 1}'.encode("utf-16"))
    result = _run_cli(tmp_path, "import", "u16.json", "x.fs")
    assert result.returncode != 0
    assert "not UTF-8" in result.stderr and "$int" not in result.stderr, result.stderr
    assert not (tmp_path / "x.fs").exists()                 # nothing created


def test_import_accepts_a_utf8_byte_order_mark(tmp_path):
    (tmp_path / "bom.json").write_bytes('{"a": [1, "é"]}'.encode("utf-8-sig"))
    result = _run_cli(tmp_path, "import", "bom.json", "x.fs")
    assert result.returncode == 0, result.stderr
    with zpydb.connect(str(tmp_path / "x.fs")) as db:
        assert db["a"]._run() == [1, "é"]


def test_import_refuses_what_export_refuses(tmp_path):
    """Import accepts the non-JSON tokens NaN/Infinity and 1e400 (-> inf); export then
    refuses the very database ('JSON has no NaN or Infinity'): a strict-JSON tool
    should refuse them on the way in too (nothing imported)."""
    for number, text in enumerate(['{"a": 1e400}', '{"b": [NaN]}', '{"c": -Infinity}']):
        (tmp_path / f"{number}.json").write_text(text)
        result = _run_cli(tmp_path, "import", f"{number}.json", "x.fs")
        assert result.returncode != 0, f"imported {text}: {result.stdout} {result.stderr}"
        assert "not strict JSON" in result.stderr, result.stderr
        assert not (tmp_path / "x.fs").exists()
