"""The exceptions attend raises. Each carries the message of the Rust library."""


class AttendError(Exception):
    """Base of every error attend raises."""


class ShapeError(AttendError, ValueError):
    """Arrays whose shapes do not fit together (or could not exist)."""


class InvalidArgument(AttendError, ValueError):
    """An argument outside its domain: a non-finite value, a bad scale, a bad window..."""


class ModelError(AttendError):
    """A model that is unknown, missing, corrupt or cannot be fetched."""


__all__ = ["AttendError", "ShapeError", "InvalidArgument", "ModelError"]
