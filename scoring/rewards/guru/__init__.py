"""Rewards of the GURU suite (LLM360/Reasoning360's `verl/utils/reward_score`), one module per
domain, each giving the verdicts Reasoning360's own function gives (tests/guru_reference holds
verdicts computed with it, and the tests compare row by row). Where that function does something
at random or raises, the module docstring says what we do instead.

Shared pieces: `hendrycks` (the MATH answer normaliser), `prm800k` (its sympy grader),
`grader` (`math_equal`), `pyeval` (what Python's eval makes of plain arithmetic).
"""
