"""bench's rate search: coarse steps until a loss, then bisection."""

from ioc.tools.bench import rate_search


def search(limit: float, rates, refine: int, simulator_max: float = 1e9):
    tried = []

    def attempt(rate):
        tried.append(rate)
        return (1 if rate > limit else 0), min(rate, simulator_max)

    return rate_search(rates, attempt, refine), tried


def test_bisects_between_last_good_and_first_bad():
    best, tried = search(337, [50, 100, 200, 300, 400, 500], refine=2)
    assert tried == [50, 100, 200, 300, 400, 350, 325]
    assert best == 325


def test_stops_when_the_simulator_cannot_keep_up():
    best, tried = search(1e9, [50, 100, 200, 300, 400], refine=2, simulator_max=250)
    assert tried == [50, 100, 200, 300]  # 250 achieved of 300 asked: saturated
    assert best == 250


def test_no_loss_at_all_and_no_refinement():
    assert search(1e9, [20, 50], refine=2) == (50, [20, 50])
    assert search(30, [20, 50], refine=0) == (20, [20, 50])
