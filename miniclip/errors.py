"""User errors: what a command reports in one line with exit code 2, as opposed to bugs.

A `UserError` is a mistake in what the user gave miniclip: a flag value, a data file (named with
its line and column), a missing column, an unknown model, a checkpoint that is not a valid one.
The library raises it like any ValueError (it is one), so Python code that calls miniclip can catch
it; the commands (`python -m miniclip.train`, `.zeroshot`, `.search`, `.bench`) print its message
after the program's name and exit with code 2, argparse's code for a usage error, so a user sees
one clear line and never a traceback. Anything else that escapes a command is a bug in miniclip
and keeps its traceback, so that it can be reported and fixed.
"""
import sys


class UserError(ValueError):
    """A mistake in the user's flags, files or checkpoints; the message says which and where."""


def exit_on_user_error(prog, function, *args):
    """function(*args); a UserError becomes "prog: error: message" on stderr and exit code 2."""
    try:
        return function(*args)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
