"""The exception hierarchy of the model.

Documented kernel failures carry a NetBSD errno (``UVMError``); places where
NetBSD would ``KASSERT`` or panic raise ``KernelAssertion``; a user access
that no fault can resolve raises ``SegmentationFault``.  Argument errors of
the Python API are ``TypeError``/``ValueError``/``IndexError`` subclasses that
name the argument.
"""

from __future__ import annotations

import errno as _errno


class UVMLoanError(Exception):
    """Base class of every exception the model raises on purpose."""


class UVMError(UVMLoanError):
    """A documented kernel failure, carrying the NetBSD errno.

    ``reason`` keeps the original cause where NetBSD folds it into a coarser
    errno (``uvm_loan`` reports EINVAL for a wired page whose helper said
    EBUSY); it is for the reader, never for control flow.
    """

    def __init__(self, errno: int, message: str, *, reason: str | None = None) -> None:
        self.errno = errno
        self.message = message
        self.reason = reason
        name = _errno.errorcode.get(errno, str(errno))
        super().__init__(f"[{name}] {message}")


class KernelAssertion(UVMLoanError, AssertionError):
    """NetBSD would KASSERT or panic here (e.g. unloan of a page with loan_count 0)."""


class SegmentationFault(UVMLoanError):
    """A user access that no fault can resolve (the process would get SIGSEGV)."""

    def __init__(self, va: int, access: str, message: str) -> None:
        self.va = va
        self.access = access
        super().__init__(f"{access} at {va:#x}: {message}")


class InvariantViolation(UVMLoanError, AssertionError):
    """``check_invariants`` found the model in a state NetBSD forbids."""

    def __init__(self, invariant: str, message: str) -> None:
        self.invariant = invariant
        super().__init__(f"{invariant}: {message}")


class PhysMemError(UVMLoanError):
    """Base of the physical-memory argument errors."""


class FrameRangeError(PhysMemError, IndexError):
    """A frame number, offset or length reaches outside a page or the arena."""


class PhysMemValueError(PhysMemError, ValueError):
    """A malformed argument to a physical-memory operation (negative length, bad pattern)."""


class PhysMemTypeError(PhysMemError, TypeError):
    """An argument of the wrong type (e.g. a read-only buffer where one is written)."""


class MachineClosed(RuntimeError):
    """The machine was closed (its memory is unmapped): it takes no more work."""


__all__ = [
    "FrameRangeError",
    "InvariantViolation",
    "KernelAssertion",
    "MachineClosed",
    "PhysMemError",
    "PhysMemTypeError",
    "PhysMemValueError",
    "SegmentationFault",
    "UVMError",
    "UVMLoanError",
]
