"""The ``zpydb shell``: pyzdb's ``> `` prompt on ``code.InteractiveConsole``.

Python with ``db`` bound to the root proxy.  The values of bare expression
statements are shown (a path is read with ``value()``) and pretty-printed, at
most ``MAX_LINES`` lines of them, with a note on how to see the rest.

* At a terminal: REPL rules, as Python's own prompt (a block ends with an empty
  line; an error prints one line, its type and message, which names the failing
  path, and the prompt continues).  Line editing and persistent history
  through ``readline`` (``~/.zpydb_history``, or ``$ZPYDB_HISTORY``) and tab
  completion of keys after ``db[...]['``.
* ``-c STATEMENTS`` and piped input: SCRIPT rules, as ``python file.py``.  The
  whole text is compiled first, so a syntax error anywhere (an unclosed
  bracket at the end included) runs nothing; then the top-level statements run
  in order, and the first error stops the script, as in Python: statements
  after a failed one usually depend on it.  Errors print one line that names
  the script's line (``line 3: KeyNotFoundError: db['a']['zz']: no such key``)
  and the exit status is 1.  Bare expressions still show their values.
"""

import ast
import code
import os
import pprint
import re
import sys

from . import nodes
from .paths import Listing, Path

PROMPT = "> "
CONTINUATION = "... "
HISTORY_ENV = "ZPYDB_HISTORY"
#: A shown value longer than this is cut, with a note on how to see all of it.
MAX_LINES = 50
MAX_CHARS = 20_000
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
        if isinstance(value, Listing):  # db['d'].keys(): print the list it reads
            value = list(value)
        if isinstance(value, Path):
            value = value.value()
            if value is None:
                self.out.write("None\n")
                return
        self.locals["_"] = value
        text = _Printer(sort_dicts=False, width=100).pformat(value)
        self.out.write(shorten(text) + "\n")
        self.out.flush()

    def showtraceback(self):
        _type, value, _tb = sys.exc_info()
        self._error(value)

    def showsyntaxerror(self, filename=None, **kwargs):
        _type, value, _tb = sys.exc_info()
        self._error(value)

    def _error(self, exc, line=None):
        self.failures += 1
        if isinstance(exc, SyntaxError) and line is not None:
            message = exc.msg
        elif not isinstance(exc, KeyError) or hasattr(exc, "path"):
            message = str(exc)
        else:
            message = repr(exc.args[0]) if exc.args else ""
        where = f"line {line}: " if line is not None else ""
        message = " ".join(message.split()) if line is not None else message
        self.err.write(f"{where}{type(exc).__name__}: {message}\n")
        self.err.flush()

    def runcode(self, codeobj):
        previous = sys.displayhook
        sys.displayhook = self.display
        try:
            super().runcode(codeobj)
        finally:
            sys.displayhook = previous

    # -- running --------------------------------------------------------------
    def run_script(self, text, filename="<stdin>"):
        """Run ``text`` as ``python`` runs a script file; return the exit status (0 or 1).

        Compiled as a whole first (a syntax error runs nothing), then each
        top-level statement is compiled in ``single`` mode (so bare expressions
        show their values, as at the prompt) and run; the first error stops it.
        """
        try:
            tree = ast.parse(text, filename, "exec")
            compile(tree, filename, "exec")  # the compile-time errors (`return` outside a function...)
        except SyntaxError as exc:
            self._error(exc, line=exc.lineno or 1)
            return 1
        except ValueError as exc:  # e.g. a NUL byte in the source
            self._error(SyntaxError(str(exc)), line=1)
            return 1
        for node in tree.body:
            codeobj = compile(ast.Interactive(body=[node]), filename, "single")
            try:
                self.runcode_raising(codeobj)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                self._error(exc, line=_script_line(exc, filename, node.lineno))
                return 1
        return 0

    def runcode_raising(self, codeobj):
        """Run ``codeobj`` in the shell's namespace with the shell's display; errors propagate."""
        previous = sys.displayhook
        sys.displayhook = self.display
        try:
            exec(codeobj, self.locals)
        finally:
            sys.displayhook = previous

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


def shorten(text, max_lines=MAX_LINES, max_chars=MAX_CHARS):
    """``text`` cut to ``max_lines`` lines and ``max_chars`` characters, with a note."""
    if len(text) <= max_chars and text.count("\n") < max_lines:
        return text
    lines = text.split("\n")
    shown = "\n".join(lines[:max_lines])
    if len(shown) > max_chars:
        shown = shown[:max_chars]
    hidden_lines = len(lines) - shown.count("\n") - 1
    hidden_chars = len(text) - len(shown)
    what = (f"{hidden_lines:,} more lines" if hidden_lines > 0
            else f"{hidden_chars:,} more characters")
    return f"{shown}\n... ({what} not shown; print(_) shows all of it)"


def _script_line(exc, filename, default):
    """The script line an exception came from: the innermost frame of the script."""
    line = default
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def run_shell(db, command=None, stdin=None):
    """Entry point for ``zpydb shell``: -c, piped stdin, or the interactive prompt.

    Returns the exit status: 0, or 1 when a ``-c`` or piped script failed.
    """
    stdin = stdin or sys.stdin
    shell = Shell(db)
    if command is not None:
        return shell.run_script(command, "<string>")
    if stdin.isatty():
        shell.interact_tty()
        return 0
    return shell.run_script(stdin.read(), "<stdin>")



class _Printer(pprint.PrettyPrinter):
    """pprint that shows an int too long for ``str()`` (past 4300 digits) by its size
    instead of raising ValueError (``hex(_)`` or ``_.bit_length()`` still work on it),
    and the value of a path held in a displayed dict or list."""

    def format(self, obj, context, maxlevels, level):
        if isinstance(obj, Path):  # a path inside a displayed dict/list: its value
            obj = obj.value()
        if isinstance(obj, int) and not isinstance(obj, bool):
            return nodes.int_text(obj), True, False
        return super().format(obj, context, maxlevels, level)
