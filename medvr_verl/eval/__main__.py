"""``python -m medvr_verl.eval``: see :mod:`medvr_verl.eval.cli`."""

from medvr_verl.eval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
