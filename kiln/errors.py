"""kiln's error hierarchy (after Halide's Error.h): whose fault it is decides the class.

- ``ModelError``: the model (graph or ONNX file) is malformed or uses what kiln does not support.
- ``InputError``: run-time inputs do not match what the compiled library expects.
- ``KnobError``: a schedule knob is invalid for this shape or target; the tuner skips such configs.
- ``ConfigError``: a setting kiln reads from the environment is malformed.
- ``InternalError``: a broken invariant inside kiln (a kiln bug, not the user's).
All derive from ``KilnError``; the CLI turns any ``KilnError`` into one line and exit status 2.
"""

MAX_MESSAGE_CHARS = 2000   # a message quoting a hostile model's attribute stays readable


class KilnError(Exception):
    """Base class of every error kiln raises on purpose."""


class ModelError(KilnError):
    """The model is malformed or uses an op, attribute or shape kiln does not support."""


class ConstantInputError(ModelError):
    """A graph input is used where kiln needs its value while compiling (a Reshape's shape,
    Resize's scales); ``kiln.compile(..., constants={name: array})`` binds it."""

    def __init__(self, message: str, input_name: str) -> None:
        super().__init__(message)
        self.input_name = input_name


class InputError(KilnError):
    """Inputs given to a compiled library do not match its signature."""


class KnobError(KilnError):
    """A schedule knob value does not fit the shape or target it is applied to."""


class ConfigError(KilnError):
    """An environment variable or setting kiln reads is malformed."""


class InternalError(KilnError):
    """An invariant inside kiln is broken: please report it as a bug."""


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message (TVM and onnx errors run long),
    or its type name when the message is empty: for one-line errors."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def shorten(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters, the middle replaced by how much was left out:
    a hostile model's 200,000-entry attribute must not become a megabyte-long error line."""
    if len(message) <= limit:
        return message
    keep = limit - 40
    head, tail = message[:keep * 3 // 4], message[len(message) - keep // 4:]
    return f"{head} ... [{len(message) - len(head) - len(tail)} characters] ... {tail}"
