"""The exceptions attend raises. Each carries the message of the Rust library."""


class AttendError(Exception):
    """Base of every error attend raises."""


class ShapeError(AttendError, ValueError):
    """Arrays whose shapes do not fit together (or could not exist)."""


class InvalidArgument(AttendError, ValueError):
    """An argument outside its domain: a non-finite value, a bad scale, a bad window..."""


class ModelError(AttendError):
    """A model that is unknown, missing, corrupt or cannot be fetched."""


def _integer(name: str, value, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """``value`` as an int in ``lo..=hi``, or ``InvalidArgument`` naming ``name``: a bool, a
    float with a fraction, NaN, an infinity, a string or anything out of range is refused here,
    never as a bare ``ValueError``/``OverflowError`` from deeper down."""
    import numbers

    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = float(value)
        ok = f == f and abs(f) != float("inf") and f == int(f)
    if ok and lo <= int(value) <= hi:
        return int(value)
    raise InvalidArgument(f"{name} must be an integer from {lo} to {hi}, not {value!r}")


def _real(name: str, value) -> float:
    """``value`` as a float, or ``InvalidArgument`` naming ``name``."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name} must be a number, not {value!r}")
    return float(value)


__all__ = ["AttendError", "ShapeError", "InvalidArgument", "ModelError"]
