-- Maintenance that runs by itself: the server keeps the audit partitions ahead and
-- applies retention, one instance at a time; rows that landed in the default partition move
-- into their month's partition when it is created, never lost.

-- Create the partitions of the months from `first` to `first + ahead` months and of every
-- month that has rows in the default partition. A month's rows move out of the default
-- partition into its new partition in the same transaction (a partition cannot be created
-- over rows the default holds): none is lost or seen twice. Returns the partitions created
-- and the rows moved.
DROP FUNCTION audit_log_ensure_partitions(date, integer);
CREATE FUNCTION audit_log_ensure_partitions(
    first date, ahead integer, OUT created integer, OUT moved bigint
) LANGUAGE plpgsql AS $$
DECLARE
    month date;
    next date;
    name text;
    count bigint;
BEGIN
    created := 0;
    moved := 0;
    FOR month IN
        SELECT generate_series(
            date_trunc('month', first), date_trunc('month', first) + make_interval(months => ahead),
            interval '1 month')::date
        UNION
        SELECT DISTINCT date_trunc('month', at)::date FROM audit_log_default
        ORDER BY 1
    LOOP
        name := format('audit_log_%s', to_char(month, 'YYYY_MM'));
        next := (month + interval '1 month')::date;
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE audit_log INCLUDING DEFAULTS)', name);
            EXECUTE format(
                'WITH gone AS (DELETE FROM audit_log_default WHERE at >= %L AND at < %L'
                ' RETURNING *) INSERT INTO %I SELECT * FROM gone', month, next, name);
            GET DIAGNOSTICS count = ROW_COUNT;
            EXECUTE format(
                'ALTER TABLE audit_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                name, month, next);
            created := created + 1;
            moved := moved + count;
        END IF;
    END LOOP;
END $$;

-- The end of the last monthly partition (NULL: none): events before it have a partition.
CREATE FUNCTION audit_log_partition_horizon() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT max((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]
               ::timestamptz)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'audit_log'::regclass AND c.relname <> 'audit_log_default'
$$;

-- When each maintenance task last ran (retention runs once a day, whichever instance).
CREATE TABLE maintenance_runs (
    task        text        PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);
