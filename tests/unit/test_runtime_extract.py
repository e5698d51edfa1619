import pytest

from selfimprove.runtime.extract import integers, last_integer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48 + 27 = 75", 75),
        ("The answer is -5.", -5),
        ("so 87 - 251 = -164!", -164),
        ("\u2212164", -164),
        ("It is 1,234.", 1234),
        ("-1,234,567 apples", -1234567),
        ("5-3 = 2", 2),
        ("3 - 5", 5),
        ("(-7)", -7),
        ("x2", 2),
        ("nothing", None),
        ("", None),
    ],
)
def test_last_integer(text, expected):
    assert last_integer(text) == expected


def test_integers_in_order_with_signs():
    assert integers("2 + -3 = -1, then 10-20") == [2, -3, -1, 10, 20]


def test_comma_groups_need_three_digits():
    assert integers("12,34") == [12, 34]
