"""Negative-sampling strategies (paper 3.5, 4.5.2) on hand-built critique sets."""
import pytest

from carevl.refine.negatives import (
    NO_CORRECT, NO_REJECTED, NO_SCORED_CORRECT, STRATEGIES, Selection, all_incorrect, best_to_worse,
    highest_incorrect, lowest_incorrect, needs_score, select_chosen, select_pairs,
)

# Five critiques: correct flags and rubric scores (index 4 unscored).
CORRECT = [True, False, True, False, False]
SCORES = [70, 90, 85, 20, None]


def test_chosen_is_highest_scoring_correct_even_if_an_incorrect_scores_higher():
    assert select_chosen(CORRECT, SCORES) == 2


def test_best_to_worse_rejects_lower_correct_and_every_incorrect():
    sel = best_to_worse(CORRECT, SCORES)
    assert sel.chosen == 2
    assert sel.rejected == (0, 1, 3, 4)  # unscored incorrect critique 4 is still rejected
    assert sel.pairs == [(2, 0), (2, 1), (2, 3), (2, 4)]
    assert sel.skip_reason is None


def test_lowest_and_highest_incorrect_pick_one_scored_incorrect():
    assert lowest_incorrect(CORRECT, SCORES).rejected == (3,)
    assert highest_incorrect(CORRECT, SCORES).rejected == (1,)
    assert lowest_incorrect(CORRECT, SCORES).chosen == highest_incorrect(CORRECT, SCORES).chosen == 2


def test_all_incorrect_rejects_every_incorrect_including_unscored():
    sel = all_incorrect(CORRECT, SCORES)
    assert (sel.chosen, sel.rejected) == (2, (1, 3, 4))


def test_tie_for_best_keeps_lower_index_and_does_not_reject_the_equal_one():
    correct = [True, True, True, False]
    scores = [80, 80, 60, 10]
    sel = best_to_worse(correct, scores)
    assert sel.chosen == 0
    assert sel.rejected == (2, 3)  # critique 1 ties with the chosen one: neither better nor worse


def test_ties_among_incorrect_break_by_index():
    correct = [True, False, False, False]
    scores = [50, 30, 30, 40]
    assert lowest_incorrect(correct, scores).rejected == (1,)
    assert highest_incorrect(correct, [50, 40, 30, 40]).rejected == (1,)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_no_correct_critique_is_skipped_with_reason(strategy):
    sel = select_pairs(strategy, [False, False, False], [90, 50, None])
    assert sel == Selection(None, (), NO_CORRECT)
    assert sel.pairs == []


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_correct_but_unscored_is_skipped_with_reason(strategy):
    sel = select_pairs(strategy, [True, False, True], [None, 40, None])
    assert sel.chosen is None and sel.skip_reason == NO_SCORED_CORRECT


def test_all_correct():
    correct, scores = [True, True, True], [60, 95, 30]
    sel = best_to_worse(correct, scores)
    assert (sel.chosen, sel.rejected) == (1, (0, 2))
    for strategy in ("lowest_incorrect", "highest_incorrect", "all_incorrect"):
        other = select_pairs(strategy, correct, scores)
        assert other.chosen == 1 and other.rejected == () and other.skip_reason == NO_REJECTED


def test_all_correct_and_equal_scores_has_nothing_to_reject():
    sel = best_to_worse([True, True], [70, 70])
    assert sel.chosen == 0 and sel.skip_reason == NO_REJECTED


def test_all_correct_with_unscored_others_rejects_nothing_unknown():
    sel = best_to_worse([True, True, True], [60, None, 40])
    assert (sel.chosen, sel.rejected) == (0, (2,))


def test_all_incorrect_is_skipped_by_every_strategy():
    for strategy in STRATEGIES:
        assert select_pairs(strategy, [False] * 4, [10, 20, 30, 40]).skip_reason == NO_CORRECT


def test_incorrect_without_scores_cannot_be_ranked():
    correct, scores = [True, False, False], [80, None, None]
    assert lowest_incorrect(correct, scores).skip_reason == NO_REJECTED
    assert highest_incorrect(correct, scores).skip_reason == NO_REJECTED
    assert all_incorrect(correct, scores).rejected == (1, 2)
    assert best_to_worse(correct, scores).rejected == (1, 2)


def test_length_mismatch_and_unknown_strategy_fail_loudly():
    with pytest.raises(ValueError, match="length"):
        best_to_worse([True], [1, 2])
    with pytest.raises(ValueError, match="unknown negative-sampling strategy"):
        select_pairs("random", [True], [1])


def test_only_strategies_that_rank_incorrect_critiques_score_them():
    correct = [True, False, True, False]
    assert needs_score("best_to_worse", correct) == [True, False, True, False]
    assert needs_score("all_incorrect", correct) == [True, False, True, False]
    assert needs_score("lowest_incorrect", correct) == [True] * 4
    assert needs_score("highest_incorrect", correct) == [True] * 4
    with pytest.raises(ValueError, match="unknown negative-sampling strategy"):
        needs_score("random", correct)
    # What is left unscored cannot change a Best-to-Worse selection: the same rows with any scores there.
    for filler in (0, 50, 100, None):
        assert best_to_worse(correct, [70, filler, 40, filler]).pairs == [(0, 1), (0, 2), (0, 3)]
