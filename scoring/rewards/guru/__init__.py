"""Rewards of the GURU suite (LLM360/Reasoning360's `verl/utils/reward_score`), one module per
domain, each giving the verdicts Reasoning360's own function gives (tests/guru_reference holds
verdicts computed with it, and the tests compare row by row). Where that function does something
at random or raises, the module docstring says what we do instead.

Rewards: `math` (naive_dapo), `prime_math`, `table` (tablereason), `gpqa`, `supergpqa`,
`codeio`, `cruxeval` and `code` (coder1; both run programs in scoring.sandbox). Shared pieces:
`hendrycks` (the MATH answer normaliser), `prm800k` (its sympy grader), `grader` (`math_equal`),
`pyeval` (what Python's eval makes of plain arithmetic, without running code) and `run_python`
(programs in the sandbox, as coder1 and cruxeval's harness run them). `auto` picks these from the
table in scoring.rewards.sources.
"""
