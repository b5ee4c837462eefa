"""psycopg 3 against a paxsql node: DDL, parameterized inserts, a transaction, typed values
and an error with its SQLSTATE. Usage: python3 psycopg_smoke.py "host=... port=... dbname=main"

Prints "ok" and exits 0 when every check holds; any failed check raises (exit 1).
"""

import sys

import psycopg
from psycopg import errors


def main(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE py_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
            "price REAL, payload BLOB, active BOOLEAN, note TEXT)"
        )
        # Parameterized inserts: psycopg sends %s as $n with the extended protocol.
        conn.execute(
            "INSERT INTO py_items (id, name, price, payload, active, note) VALUES (%s, %s, %s, %s, %s, %s)",
            (1, "apple", 1.25, b"\x00\x01\xff", True, None),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO py_items (id, name, price) VALUES (%s, %s, %s)",
                [(i, f"item {i}", i * 0.5) for i in range(2, 12)],
            )
        # Typed values come back as Python types.
        row = conn.execute(
            "SELECT id, name, price, payload, active, note FROM py_items WHERE id = %s", (1,)
        ).fetchone()
        assert row == (1, "apple", 1.25, b"\x00\x01\xff", True, None), row
        assert isinstance(row[0], int) and isinstance(row[2], float), row
        count = conn.execute("SELECT count(*) FROM py_items").fetchone()[0]
        assert count == 11, count

        # The SQLSTATE of an error, as a psycopg exception class; the session survives.
        try:
            conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (99, "apple"))
            raise AssertionError("a duplicate name was accepted")
        except errors.UniqueViolation as error:
            assert error.sqlstate == "23505", error.sqlstate
        try:
            conn.execute("SELECT * FROM no_such_table")
            raise AssertionError("a missing table was accepted")
        except errors.UndefinedTable as error:
            assert error.sqlstate == "42P01", error.sqlstate
        assert conn.execute("SELECT 1").fetchone()[0] == 1

    # A transaction: psycopg's default (non-autocommit) mode sends BEGIN itself.
    with psycopg.connect(conninfo) as conn:
        conn.execute("UPDATE py_items SET price = price * 2 WHERE id = %s", (1,))
        inside = conn.execute("SELECT price FROM py_items WHERE id = %s", (1,)).fetchone()[0]
        assert inside == 2.5, inside
        conn.commit()
        with conn.transaction():
            conn.execute("DELETE FROM py_items WHERE id > %s", (5,))
            conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (100, "kept"))
        conn.commit()
        try:
            with conn.transaction():
                conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (200, "gone"))
                conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (201, None))
        except errors.NotNullViolation as error:
            assert error.sqlstate == "23502", error.sqlstate
        conn.rollback()
        ids = [r[0] for r in conn.execute("SELECT id FROM py_items ORDER BY id").fetchall()]
        assert ids == [1, 2, 3, 4, 5, 100], ids
        conn.commit()
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
