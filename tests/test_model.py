"""Property-based tests: zpydb against plain dicts and lists (hypothesis).

A state machine drives a file-backed database and a plain-Python model with
the same random writes, undos, redos and close/reopen cycles, and checks after
every step that both hold the same tree.  The model of undo/redo is an editor's:
a stack of states, a redo stack that any new write clears.
"""

import copy
import shutil
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import zpydb

KEYS = st.sampled_from(["a", "b", "c", "d"])
SCALARS = (st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
           | st.binary(max_size=4) | st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(
    SCALARS | st.tuples(st.integers(), st.text(max_size=3)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                  max_size=4),
    max_leaves=12)


class ZpydbVsModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="zpydb-model-")
        self.url = self.directory + "/Data.fs"
        self.db = zpydb.connect(self.url)
        self.states = [{}]          # undo stack of model states (last = current)
        self.redo_states = []

    @property
    def model(self):
        return self.states[-1]

    def _write(self, change):
        new = copy.deepcopy(self.model)
        change(new)
        self.states.append(new)
        self.redo_states.clear()

    @rule(key=KEYS, value=VALUES)
    def set_key(self, key, value):
        self.db[key] = value
        self._write(lambda m: m.__setitem__(key, value))

    @rule(key=KEYS, items=st.lists(SCALARS, max_size=5))
    def set_list(self, key, items):
        self.db[key] = items
        self._write(lambda m: m.__setitem__(key, list(items)))

    @precondition(lambda self: any(isinstance(v, list) for v in self.model.values()))
    @rule(data=st.data(), value=VALUES)
    def append(self, data, value):
        key = data.draw(st.sampled_from(sorted(k for k, v in self.model.items()
                                               if isinstance(v, list))))
        self.db[key].append(value)
        self._write(lambda m: m[key].append(value))

    @precondition(lambda self: any(isinstance(v, list) and v for v in self.model.values()))
    @rule(data=st.data(), value=SCALARS)
    def set_index(self, data, value):
        key = data.draw(st.sampled_from(sorted(k for k, v in self.model.items()
                                               if isinstance(v, list) and v)))
        index = data.draw(st.integers(-len(self.model[key]), len(self.model[key]) - 1))
        self.db[key][index] = value
        self._write(lambda m: m[key].__setitem__(index, value))

    @precondition(lambda self: any(isinstance(v, list) and v for v in self.model.values()))
    @rule(data=st.data())
    def pop(self, data):
        key = data.draw(st.sampled_from(sorted(k for k, v in self.model.items()
                                               if isinstance(v, list) and v)))
        expected = self.model[key][-1]
        assert self.db[key].pop() == expected
        self._write(lambda m: m[key].pop())

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        key = data.draw(st.sampled_from(sorted(self.model)))
        del self.db[key]
        self._write(lambda m: m.__delitem__(key))

    @staticmethod
    def _move(action, source, target):
        """undo/redo: move the top state between the stacks, or expect UndoError."""
        if source:
            action()
            target.append(source.pop())
            return
        with pytest.raises(zpydb.UndoError):
            action()

    @rule()
    def undo(self):
        self._move(self.db.undo, self.states if len(self.states) > 1 else [], self.redo_states)

    @rule()
    def redo(self):
        self._move(self.db.redo, self.redo_states, self.states)

    @rule()
    def reopen(self):
        self.db.close()
        self.db = zpydb.connect(self.url)

    @invariant()
    def same_tree(self):
        assert self.db._run() == self.model

    def teardown(self):
        self.db.close()
        shutil.rmtree(self.directory, ignore_errors=True)


ZpydbVsModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_zpydb_matches_a_plain_model = ZpydbVsModel.TestCase
