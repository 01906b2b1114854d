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


def test_the_parse_limits_come_from_the_settings_and_a_lent_pool_is_shared_only_with_equal_limits(monkeypatch):
    from quivr_pipelines.core.parsing.guards import ParseLimits
    from quivr_pipelines.resources import resources_from_settings
    from quivr_pipelines.settings import Settings

    monkeypatch.setenv("QUIVR_PARSE_TIMEOUT_SECONDS", "42")
    monkeypatch.setenv("QUIVR_PARSE_MAX_CELLS", "1234")
    parser = resources_from_settings(Settings())["parser"]
    assert parser.limits == ParseLimits(timeout_seconds=42, max_cells=1234)
    assert ParserResource().limits == ParseLimits()  # one set of defaults

    seen.clear()
    with lend_parser_pool(2, ParseLimits()) as lent:
        assert dg.materialize([probe], resources={"parser": ParserResource(workers=2)}).success
        assert dg.materialize([probe], resources={"parser": ParserResource(workers=2, parse_timeout_seconds=5)}).success
    assert seen[0][0] is lent
    assert seen[1][0] is not lent and seen[1][0].limits.timeout_seconds == 5
