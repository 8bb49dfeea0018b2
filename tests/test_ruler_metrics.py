"""Our scorer against RULER's metric definitions on the same generations.

RULER's definitions (NVIDIA/RULER, scripts/eval/synthetic/constants.py at commit c3f5e3b), restated:
per sample, after stripping the prediction and turning control characters (\\x00-\\x1f) into newlines,
- string_match_all: the fraction of the references that occur in the prediction, case-insensitively;
- string_match_part: 1 if any reference occurs in it, else 0 (the max over references);
a task's score is the mean over samples, x100. The cases below are written from those definitions
(the expected values are worked out by hand), not from either implementation."""

import pytest

from hybrid.eval.ruler.scoring import score, score_one

# (prediction, references, string_match_all, string_match_part)
CASES = [
    ("The special magic number is 1234567.", ["1234567"], 1.0, 1.0),
    ("1234567 and 7654321", ["1234567", "7654321", "1111111", "2222222"], 0.5, 1.0),
    ("APPLE banana", ["apple"], 1.0, 1.0),  # case-insensitive
    ("nothing here", ["a1", "b2"], 0.0, 0.0),
    ("\x00 1234567\x1f", ["1234567"], 1.0, 1.0),  # control characters do not hide an answer
    ("12345678", ["1234567"], 1.0, 1.0),  # a substring counts, as in RULER
    ("", ["x"], 0.0, 0.0),
    ("Paris, France", ["Paris", "the city of Paris"], 0.5, 1.0),  # qa: one of two gold answers
    ("XVAR ABC VAR DEF", ["ABC", "DEF", "GHI"], 2 / 3, 1.0),
]


@pytest.mark.parametrize("pred, refs, want_all, want_part", CASES)
def test_per_sample_scores_match_rulers_definitions(pred, refs, want_all, want_part):
    assert score_one("string_match_all", pred, refs) == pytest.approx(want_all)
    assert score_one("string_match_part", pred, refs) == pytest.approx(want_part)


def test_task_score_is_the_mean_over_samples_x100():
    preds, refs = [c[0] for c in CASES], [c[1] for c in CASES]
    assert score("string_match_all", preds, refs) == pytest.approx(100 * sum(c[2] for c in CASES) / len(CASES))
    assert score("string_match_part", preds, refs) == pytest.approx(100 * sum(c[3] for c in CASES) / len(CASES))


def test_lm_eval_port_scores_string_match_part_as_a_fraction():
    """lm-evaluation-harness's RULER port (lm_eval/tasks/ruler/common_utils.py, 0.4.x) takes the max over
    samples of the fraction of references found, which for its one generation per document is
    string_match_all's value: it differs from RULER's string_match_part wherever a sample finds some but
    not all of several references (qa_1/qa_2 with several gold answers). string_match_all agrees."""
    cu = pytest.importorskip("lm_eval.tasks.ruler.common_utils")
    for pred, refs, want_all, _want_part in CASES:
        p = cu.postprocess_pred([pred])
        assert cu.string_match_all(p, [refs]) == pytest.approx(want_all)
        assert cu.string_match_part(p, [refs]) == pytest.approx(want_all)  # not want_part
    differ = [c for c in CASES if c[2] != c[3]]
    assert len(differ) == 3  # the cases where lm-eval's string_match_part and RULER's disagree
