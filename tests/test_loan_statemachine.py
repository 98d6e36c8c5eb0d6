"""The loan state machine: observational equivalence with plain copying.

Default run (the x86 TLB policy): the "loan-ci" hypothesis profile;
``UVMLOAN_HYPOTHESIS_PROFILE=deep`` selects "loan-deep".  The run under the
MI ASID policy, with a pool small enough to wrap, is in ``test_sm_hooks.py``.
See :mod:`uvmloan.testing.loan_machine` and ``specs/loan.md`` section 6.
"""

from __future__ import annotations

from uvmloan.testing.loan_machine import LoanStateMachine, loan_settings

TestLoanStateMachine = LoanStateMachine.TestCase
TestLoanStateMachine.settings = loan_settings()
