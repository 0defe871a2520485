"""python -m miniclip.exercises list | start NAME [DIR] | hint NAME [--tier 1|2|3] | check NAME [FILE]

Exit codes: 0 when the check passes (or list/start/hint worked), 1 when it fails or a function is
not filled in yet, 2 for a usage error (an unknown exercise, a missing file).
"""
import argparse
import os
import sys

import miniclip.exercises as exercises


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m miniclip.exercises",
                                     description="Write a backward by hand; miniclip's gradcheck judges it.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the exercises")
    start = commands.add_parser("start", help="write the template to DIR/NAME.py (DIR defaults to ./exercises)")
    start.add_argument("name")
    start.add_argument("directory", nargs="?", default="exercises")
    start.add_argument("--force", action="store_true", help="overwrite an existing file")
    hint = commands.add_parser("hint", help="print the hints up to --tier (1: what to think about, "
                                             "2: the structure, 3: the formula)")
    hint.add_argument("name")
    hint.add_argument("--tier", type=int, choices=(1, 2, 3), default=1)
    check = commands.add_parser("check", help="check FILE (defaults to ./exercises/NAME.py)")
    check.add_argument("name")
    check.add_argument("file", nargs="?")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            width = max(len(n) for n in exercises.names())
            for name in exercises.names():
                module = exercises.get(name)
                print(f"{name:<{width}}  {module.TITLE}   [{module.TUTORIAL}]")
            return 0
        if args.command == "hint":
            print(exercises.hint(args.name, args.tier))
            if args.tier < 3:
                print(f"\n(Still stuck? python -m miniclip.exercises hint {args.name} --tier {args.tier + 1})")
            return 0
        if args.command == "start":
            path = exercises.start(args.name, args.directory, overwrite=args.force)
            print(f"wrote {path}: fill in the functions that raise NotImplementedError, then run\n"
                  f"    python -m miniclip.exercises check {args.name} {path}")
            return 0
        path = args.file or os.path.join("exercises", f"{args.name}.py")
        result = exercises.check(args.name, path)
        return 0 if result.passed else 1
    except (KeyError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
