"""The parser resource's pool: the step's own, or the one a process lends to all its runs."""

import dagster as dg

from quivr_pipelines.resources import ParserResource
from quivr_pipelines.resources.parser import lend_parser_pool

seen = []


@dg.asset
def probe(parser: ParserResource) -> None:
    seen.append((parser.pool, parser.pool.closed))


def test_a_step_opens_its_own_pool_and_closes_it_at_the_end():
    seen.clear()
    assert dg.materialize([probe], resources={"parser": ParserResource(workers=2)}).success
    [(pool, closed_during)] = seen
    assert closed_during is False and pool.closed  # closed when the step ended


def test_runs_executed_in_a_lending_context_share_one_warm_pool():
    seen.clear()
    with lend_parser_pool(2) as lent:
        for _ in range(2):
            assert dg.materialize([probe], resources={"parser": ParserResource(workers=2)}).success
        assert [pool for pool, _ in seen] == [lent, lent] and not lent.closed
        # A step asking for another size gets a pool of its own; the lent one is untouched.
        assert dg.materialize([probe], resources={"parser": ParserResource(workers=1)}).success
        assert seen[-1][0] is not lent and seen[-1][0].closed and not lent.closed
    assert lent.closed
