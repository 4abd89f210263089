"""The ``zpydb shell``: pyzdb's ``> `` prompt on ``code.InteractiveConsole``.

Each line is Python with ``db`` bound to the root proxy.  Expression results
are evaluated (a path is read with ``_run()``) and pretty-printed; an error
prints one line (its type and message, which names the failing path) and the
prompt continues.  At a terminal: line editing and persistent history through
``readline`` (``~/.zpydb_history``, or ``$ZPYDB_HISTORY``) and tab completion
of keys after ``db[...]['``.  With stdin not a terminal the shell prints no
prompts, runs what it reads, and exits non-zero if any statement failed.
"""

import code
import os
import pprint
import re
import sys

from .paths import Path

PROMPT = "> "
CONTINUATION = "... "
HISTORY_ENV = "ZPYDB_HISTORY"
_KEY_CONTEXT = re.compile(r"(db(?:\[[^\[\]]*\])*)\[\s*(['\"]?)$")


class Shell(code.InteractiveConsole):
    """An interactive console whose results are plain values and errors are one line."""

    def __init__(self, db, out=None, err=None):
        import zpydb
        super().__init__(locals={"db": db, "zpydb": zpydb}, filename="<zpydb>")
        self.db = db
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.failures = 0

    # -- output -------------------------------------------------------------
    def display(self, value):
        """sys.displayhook for the shell: read paths, pretty-print plain values."""
        if value is None:
            return
        if isinstance(value, Path):
            value = value._run()
            if value is None:
                self.out.write("None\n")
                return
        self.locals["_"] = value
        self.out.write(pprint.pformat(value, sort_dicts=False, width=100) + "\n")
        self.out.flush()

    def showtraceback(self):
        _type, value, _tb = sys.exc_info()
        self._error(value)

    def showsyntaxerror(self, filename=None, **kwargs):
        _type, value, _tb = sys.exc_info()
        self._error(value)

    def _error(self, exc):
        self.failures += 1
        message = str(exc) if not isinstance(exc, KeyError) or hasattr(exc, "path") \
            else repr(exc.args[0]) if exc.args else ""
        self.err.write(f"{type(exc).__name__}: {message}\n")
        self.err.flush()

    def runcode(self, codeobj):
        previous = sys.displayhook
        sys.displayhook = self.display
        try:
            super().runcode(codeobj)
        finally:
            sys.displayhook = previous

    # -- running --------------------------------------------------------------
    def run_lines(self, lines):
        """Run statements from a script or pipe; returns the number of failures."""
        more = False
        for line in lines:
            more = self.push(line.rstrip("\n"))
        if more:
            self.push("")
        return self.failures

    def interact_tty(self):
        """The interactive prompt with history and key completion."""
        history = _setup_readline(self)
        banner = (f"zpydb shell on {self.db._session.name}\n"
                  f"`db` is the database: db['key'] = value, db.undo(), db.redo(), "
                  f"db.history(). Ctrl-D quits.")
        sys.ps1, sys.ps2 = PROMPT, CONTINUATION
        try:
            self.interact(banner=banner, exitmsg="")
        finally:
            if history:
                history()

    # -- completion -------------------------------------------------------------
    def complete_keys(self, line_before, text):
        """Keys of the dict at ``db[...]`` that start with ``text`` (for ``db[...]['te``).

        None when the cursor is not inside a subscript of ``db`` (then names
        are completed as in Python's own REPL).
        """
        match = _KEY_CONTEXT.search(line_before)
        if not match:
            return None
        try:
            path = eval(match.group(1), {}, {"db": self.db})  # builds a lazy path only
            keys = path._ipython_key_completions_()
        except Exception:
            return []
        if match.group(2):  # after an open quote readline adds the closing quote itself
            return [k for k in keys if isinstance(k, str) and k.startswith(text)]
        return [f"{k!r}]" for k in keys if repr(k).startswith(text)]


def _setup_readline(shell):
    """History file and key completion; returns a function that saves the history."""
    try:
        import readline
        import rlcompleter
    except ImportError:
        return None
    path = os.environ.get(HISTORY_ENV) or os.path.expanduser("~/.zpydb_history")
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(10000)
    names = rlcompleter.Completer(shell.locals)
    readline.set_completer_delims(" \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?")

    def complete(text, state):
        line = readline.get_line_buffer()[:readline.get_begidx()]
        options = shell.complete_keys(line, text)
        if options is None:
            return names.complete(text, state)
        return options[state] if state < len(options) else None

    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")

    def save():
        try:
            readline.write_history_file(path)
        except OSError:
            pass
    return save


def run_shell(db, command=None, stdin=None):
    """Entry point for ``zpydb shell``: -c, piped stdin, or the interactive prompt."""
    stdin = stdin or sys.stdin
    shell = Shell(db)
    if command is not None:
        return 1 if shell.run_lines(command.splitlines()) else 0
    if stdin.isatty():
        shell.interact_tty()
        return 0
    return 1 if shell.run_lines(stdin) else 0

