"""The statement splitter and the index-name reader used for ``indexes/`` files."""

from __future__ import annotations

from pathlib import Path

import pytest

from shim.migrate.errors import SourceError
from shim.migrate.indexes import IndexTarget, index_targets
from shim.migrate.paths import SQL_FOLDERS
from shim.migrate.source import load_source
from shim.migrate.split import split_statements


def texts(sql: str) -> list[str]:
    return [s.text for s in split_statements(sql)]


def test_splits_on_top_level_semicolons_and_strips_whitespace() -> None:
    assert texts("select 1;\n  select 2 ;select 3") == ["select 1", "select 2", "select 3"]


def test_semicolons_inside_strings_identifiers_and_comments_do_not_split() -> None:
    sql = """
    select 'a;b', 'it''s;', "odd;name" from t; -- trailing; comment
    /* block; /* nested; */ still comment; */ select 2;
    select E'\\';' as escaped;
    """
    assert texts(sql) == [
        "select 'a;b', 'it''s;', \"odd;name\" from t",
        "-- trailing; comment\n    /* block; /* nested; */ still comment; */ select 2",
        "select E'\\';' as escaped",
    ]


def test_dollar_quoted_bodies_stay_whole() -> None:
    sql = (
        "create function f() returns int language plpgsql as $body$ begin return 1; end $body$;\n"
        "do $$ begin perform 1; end $$;\n"
        "select $1::int, a$b from t"
    )
    assert texts(sql) == [
        "create function f() returns int language plpgsql as $body$ begin return 1; end $body$",
        "do $$ begin perform 1; end $$",
        "select $1::int, a$b from t",
    ]


def test_comment_only_chunks_and_empty_statements_are_dropped() -> None:
    assert texts("-- header only;\n;;\n/* x */ ;\nselect 1;\n-- footer\n") == ["select 1"]


def test_statement_offsets_point_into_the_file() -> None:
    # Leading comments belong to the statement they precede (Postgres positions count them).
    sql = "-- header\nselect 1;\n\n  select 2;"
    first, second = split_statements(sql)
    assert (first.text, first.offset, first.line(sql)) == ("-- header\nselect 1", 0, 1)
    assert sql[second.offset :].startswith("select 2")
    assert second.line(sql) == 4


@pytest.mark.parametrize("bad", ["select 'open", 'select "open', "select $x$ open", "/* open"])
def test_unterminated_quotes_and_comments_are_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_statements(bad)


def test_index_targets_read_names_and_tables_of_create_index_statements() -> None:
    sql = '''
    -- presence lookups
    create index concurrently if not exists presence_seen on eventlive.presence (last_seen_at);
    CREATE UNIQUE INDEX CONCURRENTLY "Odd ""Name""" ON ONLY "My"."Table" (a);
    create index public.qualified_idx on t (a);
    drop index concurrently if exists old_idx;
    create index on t (b);
    '''
    assert index_targets(sql) == [
        IndexTarget("presence_seen", "eventlive.presence"),
        IndexTarget('Odd "Name"', '"My"."Table"'),
        IndexTarget("qualified_idx", "t"),
    ]


def test_an_index_file_that_does_not_split_is_a_source_error(tmp_path: Path) -> None:
    for folder in SQL_FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "indexes/broken.sql").write_text("create index i on t ((a || 'x));\n")
    with pytest.raises(SourceError, match=r"indexes/broken\.sql: unterminated '-quoted text"):
        load_source(tmp_path)
