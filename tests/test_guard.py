"""A guard over the tests themselves: no assert that cannot fail the way it reads, and no test
that asserts nothing.

`assert a == b if c else d` parses as `assert (a == b) if c else d`: when c is false it asserts
the constant d. And a test function with no assert, no pytest.raises and no call to a helper
that asserts passes whatever the code does. Both are found by reading the tests' syntax trees."""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
RAISES = {"raises", "warns", "fail"}  # pytest.raises(...), pytest.warns(...), pytest.fail(...)


def _called_names(node):
    """Names of the plain and attribute calls in node: f(...) -> f, obj.f(...) -> f."""
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            if isinstance(n.func, ast.Name):
                yield n.func.id
            elif isinstance(n.func, ast.Attribute):
                yield n.func.attr


def _checks(node):
    """Does this function body hold an assert, a library assertion (np.testing.assert_allclose,
    torch.testing.assert_close, ...) or a pytest.raises / warns / fail of its own?"""
    return any(isinstance(n, ast.Assert) for n in ast.walk(node)) or \
        any(name.startswith("assert") for name in _called_names(node)) or any(
        isinstance(n, ast.Attribute) and n.attr in RAISES and isinstance(n.value, ast.Name) and n.value.id == "pytest"
        for n in ast.walk(node))


def find_problems(sources):
    """sources {file name: Python source} -> ["file:line: what is wrong"]. A helper is any function
    defined in one of the sources; it counts for a test if it (or a helper it calls) checks."""
    trees = {name: ast.parse(src) for name, src in sources.items()}
    functions = {}  # name -> function nodes of that name, in any source
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(n.name, []).append(n)
    memo = {}

    def asserts(name, seen=()):
        if name not in memo:
            memo[name] = any(_checks(f) or any(c not in seen and c in functions and asserts(c, (*seen, name))
                                              for c in _called_names(f)) for f in functions.get(name, []))
        return memo[name]

    problems = []
    for file, tree in trees.items():
        for n in ast.walk(tree):
            if isinstance(n, ast.Assert) and isinstance(n.test, ast.IfExp):
                problems.append(f"{file}:{n.lineno}: `assert A if C else B` asserts B alone when C is false; "
                                f"write `assert a == (b if C else d)`, or two asserts")
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test") and \
                    file.startswith("test_") and not _checks(n) and \
                    not any(c in functions and asserts(c, (n.name,)) for c in _called_names(n)):
                problems.append(f"{file}:{n.lineno}: {n.name} has no assert, no pytest.raises and calls no helper "
                                f"that asserts: it cannot fail")
    return problems


def test_no_test_in_tests_is_unable_to_fail():
    sources = {p.name: p.read_text() for p in sorted(TESTS.glob("*.py"))}
    problems = find_problems(sources)
    assert not problems, "\n".join(problems)


def test_the_guard_catches_what_it_is_for():
    bad = {"test_bad.py": (
        "import pytest\n"
        "def test_ternary():\n    assert 1 == 2 if False else 4\n"
        "def test_nothing():\n    x = 1 + 1\n"
        "def test_library_assertion():\n    np.testing.assert_allclose(1, 1)\n"
        "def helper_that_prints(x):\n    print(x)\n"
        "def test_calls_a_helper_that_does_not_check():\n    helper_that_prints(3)\n"),
        "test_good.py": (
            "import pytest\n"
            "def check(x):\n    assert x\n"
            "def indirect(x):\n    check(x)\n"
            "def test_via_helper():\n    indirect(1)\n"
            "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
            "def test_conditional_operand():\n    assert 1 == (1 if True else 4)\n")}
    problems = find_problems(bad)
    assert sorted((p.split(":")[0], int(p.split(":")[1])) for p in problems) == \
        [("test_bad.py", 3), ("test_bad.py", 4), ("test_bad.py", 10)]
