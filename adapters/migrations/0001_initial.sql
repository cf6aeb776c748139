-- Enrollments and the audit log.

-- One row per enrolled user: the data key wrapped under the PBKDF2 KEK, its salt and
-- iteration count, and the master copy of the sealed enrollment record (Redis caches it).
CREATE TABLE wrapped_keys (
    user_id       uuid        PRIMARY KEY,
    wrapped_key   bytea       NOT NULL,
    salt          bytea       NOT NULL CHECK (octet_length(salt) = 16),
    iterations    integer     NOT NULL CHECK (iterations > 0),
    key_version   integer     NOT NULL CHECK (key_version BETWEEN 1 AND 65535),
    factor_count  smallint    NOT NULL CHECK (factor_count BETWEEN 1 AND 15),
    sealed_record bytea       NOT NULL,
    device_id     text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- Partitioned by month (design document, Phase 3). The primary key must contain the
-- partition key, so uniqueness of event_id is per partition: an event keeps its time, so a
-- re-delivered event lands in the same partition and ON CONFLICT makes the write idempotent.
CREATE TABLE audit_log (
    event_id  uuid        NOT NULL,
    at        timestamptz NOT NULL,
    user_id   uuid,
    action    text        NOT NULL,
    client    text,
    details   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (event_id, at)
) PARTITION BY RANGE (at);

CREATE INDEX audit_log_user_at ON audit_log (user_id, at);

-- Events whose month has no partition yet still land somewhere.
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;

-- Create the partitions of the months from `first` to `first + ahead` months.
CREATE FUNCTION audit_log_ensure_partitions(first date, ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', first)::date;
    created integer := 0;
    name text;
BEGIN
    FOR i IN 0..ahead LOOP
        name := format('audit_log_%s', to_char(month, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
                name, month, (month + interval '1 month')::date);
            created := created + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END $$;

-- Drop whole monthly partitions older than `keep` (default 90 days) and delete older rows
-- from the partition that straddles the boundary. Returns the partitions dropped.
CREATE FUNCTION audit_log_apply_retention(now timestamptz, keep interval DEFAULT '90 days')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now - keep;
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_log'::regclass AND c.relname <> 'audit_log_default'
    LOOP
        IF (regexp_match(part.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM audit_log WHERE at < cutoff;
    RETURN dropped;
END $$;
