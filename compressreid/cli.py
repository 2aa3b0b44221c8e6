"""Shared pieces of the command-line tools: the argument convention and the exit-code contract.

Exit codes: 0 every gate passed, 3 a gate failed (artifact kept, marked rejected),
2 bad usage / configuration / input, 1 internal error, 130 / 143 interrupted by SIGINT / SIGTERM (128 + the
signal, as a shell reports it). The library raises; only tools exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
import threading
import traceback
from typing import Callable, Iterator

from compressreid.errors import CheckpointError, ConfigError, DataError, ExportError, GateFailed, Interrupted

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3


def build_parser(description: str) -> argparse.ArgumentParser:
    """``--config-file F`` followed by ``KEY VALUE`` overrides, the detectron2 / fast-reid convention."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", default="", metavar="FILE", help="yaml config (fast-reid files merge as-is)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.BASE_LR 0.001")
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # the ONNX exporter's optimiser reports every rewrite pass at INFO
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """``--allow-unsafe-checkpoint``: the per-invocation opt-in to checkpoints that need arbitrary unpickling.

    A command-line flag rather than a config key on purpose: a config file passed around (or a fast-reid
    config.yaml) must never be able to switch it on for whoever runs it.
    """
    parser.add_argument("--allow-unsafe-checkpoint", action="store_true",
                        help="load checkpoints that hold pickled Python objects besides tensors (this runs code "
                             "from the file: only for files you trust)")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``Interrupted`` while the body runs, so run folders record 'interrupted' and partial
    files are removed on the way out (Python's default would end the process where it stands)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_tool(main: Callable[[], None]) -> int:
    """Run a tool's body and map the library's typed errors onto exit codes."""
    try:
        with sigterm_raises():
            main()
    except GateFailed as exc:
        print(f"gate failed: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except (ConfigError, DataError, CheckpointError, ExportError) as exc:
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyError as exc:  # registry lookups: unknown component names are bad configuration
        if "unknown " in str(exc):
            print(f"error: {error_message(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        traceback.print_exc()
        return EXIT_INTERNAL
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Interrupted
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"interrupted: stopped by {signal.Signals(signum).name} (the run folder records 'interrupted')",
              file=sys.stderr)
        return 128 + int(signum)
    except Exception:  # noqa: BLE001 - the last line of defence turns any bug into exit code 1
        traceback.print_exc()
        return EXIT_INTERNAL
    return EXIT_OK


# "module.Class: message", the last line of a formatted traceback
_TRACEBACK_LAST_LINE = re.compile(r"^[A-Za-z_][\w.]*: (.*)$")


def error_message(exc: BaseException) -> str:
    """The error's own message on one line.

    An error raised inside a DataLoader worker reaches the main process re-created with torch's wrapper text
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the original message is the
    last line of that traceback, after its "module.Class: " prefix.
    """
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        match = _TRACEBACK_LAST_LINE.match(last)
        text = match.group(1) if match else last
    return text or type(exc).__name__
