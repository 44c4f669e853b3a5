-- iso8601() was declared IMMUTABLE over a STABLE body (to_char is STABLE), so PostgreSQL never
-- inlined it: every call ran as a separate SQL-function execution whose body was planned again
-- in each query. A device row carries up to ten timestamps, so a JITP first connection made ~17
-- such executions. Declared STABLE, it is inlined into each query as the to_char expression.
-- Same text for every input. No index or constraint uses it, so IMMUTABLE is not needed.
CREATE OR REPLACE FUNCTION iso8601(ts TIMESTAMPTZ) RETURNS TEXT
    LANGUAGE sql STABLE
    AS $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;
