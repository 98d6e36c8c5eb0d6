"""Error messages that name the problem: profile fields with their types, a
range outside the address space, uvm_unloan given one page; and every
public kernel wrapper has a docstring."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import uvmloan
from uvmloan import (
    UVM_LOAN_TOPAGE,
    Machine,
    check_invariants,
    get_profile,
    kernapi,
    uvm_loan,
    uvm_unloan,
)
from uvmloan.page import Page


@pytest.mark.parametrize(
    ("overrides", "exc", "match"),
    [
        ({"tp_maxva": "x"}, TypeError, r"profile field tp_maxva must be int, not str 'x'"),
        ({"tp_maxva": True}, TypeError, r"tp_maxva must be int, not bool"),
        ({"tlb_entries": 1.5}, TypeError, r"tlb_entries must be int, not float"),
        ({"kernel_global": 1}, TypeError, r"kernel_global must be bool, not int"),
        ({"tlb_policy": 3}, TypeError, r"tlb_policy must be str, not int"),
        ({"costs": {"copy_bw": "fast"}}, TypeError, r"cost copy_bw must be int, not str"),
        ({"costs": 5}, TypeError, r"costs must be a CostModel or a mapping"),
        ({"tp_maxvaa": 3}, ValueError, r"unknown profile field\(s\): tp_maxvaa; known: .*tp_maxva"),
        ({"costs": {"cpy_bw": 1}}, ValueError, r"unknown cost field\(s\): cpy_bw; known: .*"),
    ],
)
def test_profile_overrides_name_the_field_and_type(
    overrides: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        get_profile("netbsd-10", **overrides)
    with pytest.raises(exc, match=match):
        Machine(ncpus=1, memory="1M", profile_overrides=overrides)


def test_a_huge_loan_length_names_the_address_space() -> None:
    with Machine(ncpus=1, memory="1M") as m:
        p = m.spawn("s")
        va = p.mmap(4096)
        with pytest.raises(ValueError) as e:
            uvm_loan(p.map, va, 2**64, UVM_LOAN_TOPAGE)
        msg = str(e.value)
        assert "is outside the address space" in msg and "of map 's'" in msg
        assert f"{p.map.maxva:#x}" in msg
        check_invariants(m)


def test_uvm_unloan_of_one_page_says_a_list_is_expected() -> None:
    with Machine(ncpus=1, memory="1M") as m:
        p = m.spawn("s")
        va = p.mmap(4096)
        p.write(va, b"x")
        pages = uvm_loan(p.map, va, 4096, UVM_LOAN_TOPAGE)
        for bad in (pages[0], 7, None):
            with pytest.raises(TypeError, match=r"expected a list of pages .*\[page\]"):
                uvm_unloan(bad, UVM_LOAN_TOPAGE)  # type: ignore[arg-type]
        assert isinstance(pages[0], Page) and pages[0].loan_count == 1  # unchanged
        uvm_unloan(pages, UVM_LOAN_TOPAGE)
        uvm_unloan(tuple(), UVM_LOAN_TOPAGE)
        check_invariants(m)


def test_every_public_kernel_operation_has_a_docstring() -> None:
    names = [n for n in uvmloan.__all__ if n.startswith(("pmap_", "uvm_"))]
    assert len(names) >= 16
    for n in names:
        fn = getattr(uvmloan, n)
        assert (fn.__doc__ or "").strip(), n
    for n, fn in inspect.getmembers(kernapi, inspect.isfunction):
        if not n.startswith("_") and fn.__module__ == kernapi.__name__:
            assert (fn.__doc__ or "").strip(), n


def test_wrappers_check_their_argument_type() -> None:
    with pytest.raises(TypeError, match="pmap_update: pmap must be a Pmap"):
        uvmloan.pmap_update("kernel")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uvm_pagefree: pg must be a Page"):
        uvmloan.uvm_pagefree(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uvm_loan: map must be a VMMap"):
        uvmloan.uvm_loan(None, 0, 4096, UVM_LOAN_TOPAGE)  # type: ignore[arg-type]
