"""Span names from SQL text: operation plus target, cheap and bounded, never from values."""

from __future__ import annotations

import pytest

from flowtracker.instrumentation._sql import HEAD, span_name, statement_text


class TestSpanName:
    """``span_name`` reads the statement's head only."""

    @pytest.mark.parametrize(
        ("statement", "name"),
        [
            ("SELECT id FROM users WHERE id = $1", "SELECT users"),
            ("select * from public.users u join teams t on t.id = u.team", "SELECT public.users"),
            ('-- why\n/* who */ SELECT * FROM "My Table"', 'SELECT "My Table"'),
            ("INSERT INTO orders (id) VALUES (?)", "INSERT orders"),
            ("UPDATE ONLY accounts SET balance = :b", "UPDATE accounts"),
            ("DELETE FROM sessions WHERE expires < now()", "DELETE sessions"),
            ("SELECT count(*) FROM (SELECT 1) s", "SELECT"),
            ("COPY (SELECT 1) TO STDOUT", "COPY"),
            ("CREATE TABLE IF NOT EXISTS users (id int)", "CREATE users"),
            ("WITH recent AS (SELECT 1) SELECT * FROM recent", "WITH"),
            ("BEGIN", "BEGIN"),
            ("SELECT 1", "SELECT"),
        ],
    )
    def test_operation_and_target(self, statement: str, name: str) -> None:
        """The first keyword, upper-cased, and the table after FROM/INTO/UPDATE where there is one."""
        assert span_name(statement) == name

    @pytest.mark.parametrize("statement", ["", ";", "   ", "/* never closed " + " " * 5000, "x" * 100_000])
    def test_no_keyword_gives_the_default(self, statement: str) -> None:
        """Text with no leading SQL keyword (or an endless word) is named by the default."""
        assert span_name(statement, "postgresql") == "postgresql"

    def test_a_table_past_the_head_is_not_looked_for(self) -> None:
        """Only the first HEAD characters are read: a FROM beyond them names nothing."""
        assert span_name("SELECT " + "a, " * HEAD + "b FROM far_away") == "SELECT"

    def test_statement_text(self) -> None:
        """str as is, bytes decoded (bad bytes replaced), anything else None."""
        assert statement_text("SELECT 1") == "SELECT 1"
        assert statement_text(b"SELECT \xff") == "SELECT \ufffd"
        assert statement_text(None) is None
        assert statement_text(12) is None
