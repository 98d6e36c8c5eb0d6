"""The loan state machine: observational equivalence with plain copying.

Default run: the "loan-ci" hypothesis profile; ``UVMLOAN_HYPOTHESIS_PROFILE=deep``
selects "loan-deep".  See :mod:`uvmloan.testing.loan_machine` and
``specs/loan.md`` section 6.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import settings

from uvmloan.testing.loan_machine import LoanStateMachine, loan_settings

TestLoanStateMachine = LoanStateMachine.TestCase
TestLoanStateMachine.settings = loan_settings()


class MIASIDLoanStateMachine(LoanStateMachine):
    """The same properties under the MI pmap_tlb.c policy (ASIDs, IPIs the
    initiator does not wait for) with four CPUs and a tiny TLB."""

    NCPUS: ClassVar[int] = 4
    PROFILE_OVERRIDES: ClassVar[dict[str, Any]] = {"tlb_policy": "mi-asid", "tlb_entries": 8}


TestMIASIDLoanStateMachine = MIASIDLoanStateMachine.TestCase
_base = loan_settings()
TestMIASIDLoanStateMachine.settings = settings(_base, max_examples=max(20, _base.max_examples // 6))
