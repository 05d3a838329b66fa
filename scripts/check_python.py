"""Exit 1, saying why, unless this Python's version is within pyproject.toml's requires-python.

The Makefile runs it with the Python about to create .venv, before minutes of installing, so it runs on any
Python 3: no tomllib (3.11+), nothing outside the standard library.
"""

import operator
import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def main() -> int:
    found = re.search(r'^requires-python\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.MULTILINE)
    if found is None:
        print("scripts/check_python.py: no requires-python in pyproject.toml", file=sys.stderr)
        return 1
    spec = found.group(1)
    running = sys.version_info[:3]
    for clause in spec.split(","):
        parsed = re.fullmatch(r"\s*(>=|>|<=|<)\s*(\d+(?:\.\d+)*)\s*", clause)
        if parsed is None:
            print(f"scripts/check_python.py: can't read {clause.strip()!r} of requires-python", file=sys.stderr)
            return 1
        comparison, version = parsed.groups()
        wanted = tuple(int(part) for part in version.split("."))
        # Compared at the clause's precision: 3.11.7 is "<3.12" and ">=3.11".
        if not COMPARISONS[comparison](running[: len(wanted)], wanted):
            print(
                f"Python {'.'.join(map(str, running))} ({sys.executable}) is not supported: pyproject.toml says "
                f"requires-python {spec!r}.",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
