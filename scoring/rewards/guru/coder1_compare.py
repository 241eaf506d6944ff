"""coder1's comparison of a program's output with the expected output.

Standalone on purpose (no imports): its source is also copied into the sandbox, where the test
harness of `run_python.run_stdio_tests` compares each run's output without sending it out.
"""

TOLERANCE = 1e-6


def outputs_equal(actual: str, expected: str) -> bool:
    """Equal after trimming and `\\r\\n` -> `\\n`; else line by line and token by token, numbers
    within TOLERANCE and yes/no in any case."""
    actual = actual.strip().replace("\r\n", "\n")
    expected = expected.strip().replace("\r\n", "\n")
    if actual == expected:
        return True
    actual_lines, expected_lines = actual.split("\n"), expected.split("\n")
    if len(actual_lines) != len(expected_lines):
        return False
    return all(_lines_equal(a, e) for a, e in zip(actual_lines, expected_lines, strict=True))


def _lines_equal(actual: str, expected: str) -> bool:
    if actual == expected:
        return True
    actual_tokens, expected_tokens = actual.split(), expected.split()
    if len(actual_tokens) != len(expected_tokens):
        return False
    return all(_tokens_equal(a, e) for a, e in zip(actual_tokens, expected_tokens, strict=True))


def _tokens_equal(actual: str, expected: str) -> bool:
    if actual == expected:
        return True
    if actual.lower() in ("yes", "no") and expected.lower() in ("yes", "no"):
        return actual.lower() == expected.lower()
    try:
        return abs(float(actual) - float(expected)) <= TOLERANCE
    except ValueError:
        return False
