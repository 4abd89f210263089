"""zpydb.diff against the jsonpatch library: applying the patch gives the new value."""

from hypothesis import given, settings, strategies as st

from zpydb.diff import apply_patch, json_patch, json_pointer
from zpydb.export import encode

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                    st.binary(max_size=4))
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=3), children, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_applying_the_patch_gives_the_new_value(old, new):
    assert apply_patch(old, json_patch(old, new)) == encode(new)


def test_equal_values_give_an_empty_patch():
    assert json_patch({"a": [1, 2]}, {"a": [1, 2]}) == []


def test_a_changed_child_is_one_replace_at_its_pointer():
    assert json_patch({"cfg": {"port": 1}}, {"cfg": {"port": 2}}) == [
        {"op": "replace", "path": "/cfg/port", "value": 2}]


def test_pointers_escape_slash_and_tilde():
    assert json_pointer(["a/b", "c~d", 4]) == "/a~1b/c~0d/4"
