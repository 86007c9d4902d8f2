"""The store's schema, as sqlite-utils migrations. Never edit an applied migration: add one.

Tables (analysts rely on these names): contacts, deliveries, vendor_state, runs,
quarantine, responses, answers, nps, unsubscribes, cursors. Views are (re)created by the
last migration that touches them; the README documents every one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database, Migrations

migrations = Migrations("syncd")
# this version's migrations, in order: a store that has applied any other is from a newer syncd
KNOWN: list[str] = []


def migration(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    """Register `fn` as the next migration, under its function name."""
    KNOWN.append(fn.__name__)
    return migrations()(fn)


@migration
def m001_core(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,                 -- reconcile | pull | retry
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,               -- running | ok | partial | refused | failed | dry_run
            exit_code INTEGER,
            export_path TEXT,
            rows_read INTEGER,
            quarantined INTEGER,
            counts TEXT,                        -- JSON: {vendor: {new, changed, sent, ...}}
            message TEXT,
            seconds REAL
        );
        CREATE TABLE contacts (
            key TEXT PRIMARY KEY,               -- the CRM key column
            attributes TEXT NOT NULL,           -- JSON: every column of the latest export row
            email TEXT,                         -- normalised, for matching pulled data
            phone TEXT,                         -- E.164
            rhash INTEGER NOT NULL,             -- fingerprint of the raw row (fast path)
            first_seen TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            gone_at TEXT                        -- set when the contact left the export
        );
        CREATE INDEX contacts_rhash ON contacts(rhash);
        CREATE INDEX contacts_email ON contacts(email);
        CREATE TABLE vendor_state (
            vendor TEXT NOT NULL,
            key TEXT NOT NULL,
            hash TEXT NOT NULL,                 -- the projection the vendor acknowledged
            ref TEXT,                           -- the vendor's own id for the contact
            acked_at TEXT NOT NULL,
            PRIMARY KEY (vendor, key)
        ) WITHOUT ROWID;
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            vendor TEXT NOT NULL,
            key TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- new | changed
            status TEXT NOT NULL,               -- pending | in_flight | sent | failed | unknown
                                                -- | dead | skipped | superseded
            hash TEXT NOT NULL,
            payload TEXT NOT NULL,              -- JSON: {"fields": {...}, "metadata": {...}}
            attempts INTEGER NOT NULL DEFAULT 0,
            reason TEXT,                        -- the vendor's reason, or why it was skipped
            vendor_ref TEXT,                    -- the vendor's id for the contact
            job TEXT,                           -- async job to resume (eSputnik session, SignalVine Location)
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX deliveries_key ON deliveries(key, vendor);
        CREATE INDEX deliveries_open ON deliveries(vendor, status)
            WHERE status IN ('pending', 'in_flight', 'failed', 'unknown', 'dead');
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            file TEXT NOT NULL,
            line INTEGER,                       -- physical line where the record starts
            key TEXT,
            vendor TEXT,                        -- NULL: bad for every vendor
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX quarantine_run ON quarantine(run_id);
        CREATE TABLE responses (
            vendor TEXT NOT NULL,
            response_id TEXT NOT NULL,
            key TEXT,                           -- the CRM key, where it could be matched
            email TEXT,
            campaign TEXT,
            language TEXT,
            surveyed_at TEXT,
            answered_at TEXT,
            raw TEXT,
            pulled_at TEXT NOT NULL,
            PRIMARY KEY (vendor, response_id)
        );
        CREATE TABLE answers (
            vendor TEXT NOT NULL,
            answer_id TEXT NOT NULL,
            response_id TEXT NOT NULL,
            question_id TEXT,
            question_text TEXT,
            sort_order INTEGER,
            score REAL,
            text TEXT,
            boolean INTEGER,
            options TEXT,                       -- JSON list
            is_nps INTEGER, is_ces INTEGER, is_csat INTEGER, is_score INTEGER,
            paths TEXT,                         -- JSON list of text-analytics paths
            PRIMARY KEY (vendor, answer_id)
        );
        CREATE INDEX answers_response ON answers(vendor, response_id);
        CREATE TABLE nps (
            vendor TEXT NOT NULL,
            filter TEXT NOT NULL,               -- JSON filter array, "[]" = all respondents
            period_start TEXT NOT NULL,
            period_end TEXT NOT NULL,
            nps REAL,
            detractors REAL,
            passives REAL,
            promoters REAL,
            vendor_id TEXT,
            computed_at TEXT,
            pulled_at TEXT NOT NULL,
            PRIMARY KEY (vendor, filter, period_start, period_end)
        );
        CREATE TABLE unsubscribes (
            vendor TEXT NOT NULL,
            vendor_id TEXT NOT NULL,
            key TEXT,
            email TEXT,
            phone TEXT,
            channel TEXT,
            at TEXT NOT NULL,
            pulled_at TEXT NOT NULL,
            PRIMARY KEY (vendor, vendor_id)
        );
        CREATE INDEX unsubscribes_key ON unsubscribes(key);
        CREATE TABLE cursors (
            vendor TEXT NOT NULL,
            stream TEXT NOT NULL,
            cursor TEXT,
            updated_at TEXT NOT NULL,
            run_id INTEGER,
            PRIMARY KEY (vendor, stream)
        );
        """
    )


@migration
def m002_views(db: Database) -> None:
    db.executescript(
        """
        -- each contact's latest delivery per vendor, with what the vendor acknowledged
        CREATE VIEW contact_status AS
        SELECT c.key, d.vendor, d.status, d.reason, d.attempts, d.updated_at,
               vs.acked_at, vs.ref AS vendor_ref, c.gone_at
        FROM contacts c
        JOIN deliveries d ON d.key = c.key
        LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = c.key
        WHERE d.id = (SELECT max(id) FROM deliveries d2
                      WHERE d2.key = d.key AND d2.vendor = d.vendor);

        -- open work per vendor: what `syncd status` counts
        CREATE VIEW delivery_backlog AS
        SELECT vendor, status, count(*) AS n, min(created_at) AS oldest
        FROM deliveries
        WHERE status IN ('pending', 'in_flight', 'failed', 'unknown', 'dead')
        GROUP BY vendor, status;
        """
    )


@migration
def m003_analyst_views(db: Database) -> None:
    """The views the README documents for analysts."""
    db.executescript(
        """
        -- every answer with its response and the contact's CRM attributes (JSON: use
        -- json_extract(attributes, '$."City"'))
        CREATE VIEW answers_with_contact AS
        SELECT a.vendor, a.response_id, r.key, r.email, r.answered_at, a.question_id,
               a.question_text, a.sort_order, a.score, a.text, a.boolean, a.options,
               a.is_nps, a.is_ces, a.is_csat, a.paths, c.attributes
        FROM answers a
        JOIN responses r ON r.vendor = a.vendor AND r.response_id = a.response_id
        LEFT JOIN contacts c ON c.key = r.key;

        -- NPS as the vendor computed it, over time, per filter ("[]" = all respondents)
        CREATE VIEW nps_over_time AS
        SELECT vendor, filter, period_start, period_end, nps, promoters, passives, detractors
        FROM nps ORDER BY vendor, filter, period_start;

        -- NPS computed here from the NPS answers, per vendor and month, to check the above
        CREATE VIEW nps_from_answers AS
        SELECT a.vendor, substr(r.answered_at, 1, 7) AS month, count(*) AS answers,
               round(100.0 * (sum(a.score >= 9) - sum(a.score <= 6)) / count(*), 1) AS nps,
               sum(a.score >= 9) AS promoters, sum(a.score BETWEEN 7 AND 8) AS passives,
               sum(a.score <= 6) AS detractors
        FROM answers a
        JOIN responses r ON r.vendor = a.vendor AND r.response_id = a.response_id
        WHERE a.is_nps AND a.score IS NOT NULL
        GROUP BY a.vendor, month;

        -- surveys sent per vendor and month, and how many got a response from that contact
        CREATE VIEW response_rate AS
        SELECT d.vendor, substr(d.sent_at, 1, 7) AS month, count(DISTINCT d.id) AS sent,
               count(DISTINCT r.key) AS responded,
               round(100.0 * count(DISTINCT r.key) / count(DISTINCT d.id), 1) AS rate_percent
        FROM deliveries d
        LEFT JOIN responses r ON r.vendor = d.vendor AND r.key = d.key
             AND r.answered_at >= d.sent_at
        WHERE d.status = 'sent' AND d.sent_at IS NOT NULL
        GROUP BY d.vendor, month;

        -- unsubscribes per ISO-ish week (year-week), vendor and channel
        CREATE VIEW unsubscribes_per_week AS
        SELECT strftime('%Y-W%W', at) AS week, vendor, channel, count(*) AS unsubscribes
        FROM unsubscribes GROUP BY week, vendor, channel;

        -- what was held back and why, per vendor and kind of reason
        CREATE VIEW skipped_reasons AS
        SELECT vendor, status,
               CASE WHEN reason LIKE 'unsubscribed at %' THEN 'unsubscribed'
                    WHEN reason LIKE 'surveyed by %' THEN 'min_days_between_surveys'
                    ELSE reason END AS reason,
               count(*) AS n
        FROM deliveries WHERE status IN ('skipped', 'superseded')
        GROUP BY 1, 2, 3;
        """
    )


@migration
def m004_live_rhash_index(db: Database) -> None:
    """The diff's fast path reads every live fingerprint in order: a partial index over
    live contacts answers that from the index alone (5 s → 0.7 s at a million contacts,
    where the old index made SQLite visit every row for `gone_at`)."""
    db.executescript(
        """
        DROP INDEX contacts_rhash;
        CREATE INDEX contacts_live_rhash ON contacts(rhash) WHERE gone_at IS NULL;
        """
    )


@migration
def m005_fingerprint_cache(db: Database) -> None:
    """The live fingerprints as one sorted blob, so the diff loads them in milliseconds
    rather than stepping through a million index entries (0.4-0.7 s at a million contacts).

    The blob holds for the `contacts` generation it was written at; a trigger moves the
    generation on with every change to a contact's fingerprint or liveness, made by
    whatever (the diff, an operator's UPDATE), so a stale blob is never used: the diff
    then reads the index and writes the blob anew.
    """
    db.executescript(
        """
        CREATE TABLE contacts_generation (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation INTEGER NOT NULL
        );
        INSERT INTO contacts_generation VALUES (1, 0);
        CREATE TABLE fingerprint_cache (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation INTEGER NOT NULL,        -- contacts_generation when written
            live BLOB NOT NULL                  -- the live rhash values, sorted int64 LE
        );
        CREATE TRIGGER contacts_generation_insert AFTER INSERT ON contacts
        BEGIN UPDATE contacts_generation SET generation = generation + 1; END;
        CREATE TRIGGER contacts_generation_update AFTER UPDATE OF rhash, gone_at ON contacts
        BEGIN UPDATE contacts_generation SET generation = generation + 1; END;
        CREATE TRIGGER contacts_generation_delete AFTER DELETE ON contacts
        BEGIN UPDATE contacts_generation SET generation = generation + 1; END;
        """
    )


@migration
def m006_fingerprint_rows(db: Database) -> None:
    """The fingerprint cache also holds each live contact's rowid; the index on
    `contacts.rhash` goes; the generation triggers stand aside for the diff's own writes.

    The diff reaches a contact by its cached rowid (marking it gone, naming a repeated
    row), so nothing looks a fingerprint up in SQLite any more; the index only cost its
    upkeep, a random B-tree write for every new, changed and gone contact (about a second
    of each million-contact night). Cached rowids are checked against the fingerprint when
    used, so a VACUUM that renumbers rows costs a table scan, never a wrong contact.
    The old cache has no rowids: the next diff rebuilds it.

    The triggers cost as much again (an UPDATE per contact written). The diff accounts for
    its own writes (it writes the cache after them), so inside its transaction it sets
    `in_diff` and moves the generation on once at the end, setting `in_diff` back before
    it commits; any other writer, which never sees `in_diff` set, still moves it per row.
    """
    db.executescript(
        """
        DROP INDEX contacts_live_rhash;
        DROP TABLE fingerprint_cache;
        CREATE TABLE fingerprint_cache (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation INTEGER NOT NULL,        -- contacts_generation when written
            live BLOB NOT NULL,                 -- the live rhash values, sorted int64 LE
            rowids BLOB NOT NULL                -- each one's contacts rowid, int64 LE
        );
        ALTER TABLE contacts_generation ADD COLUMN in_diff INTEGER NOT NULL DEFAULT 0;
        DROP TRIGGER contacts_generation_insert;
        DROP TRIGGER contacts_generation_update;
        DROP TRIGGER contacts_generation_delete;
        CREATE TRIGGER contacts_generation_insert AFTER INSERT ON contacts
        WHEN NOT (SELECT in_diff FROM contacts_generation)
        BEGIN UPDATE contacts_generation SET generation = generation + 1; END;
        CREATE TRIGGER contacts_generation_update AFTER UPDATE OF rhash, gone_at ON contacts
        WHEN NOT (SELECT in_diff FROM contacts_generation)
        BEGIN UPDATE contacts_generation SET generation = generation + 1; END;
        CREATE TRIGGER contacts_generation_delete AFTER DELETE ON contacts
        WHEN NOT (SELECT in_diff FROM contacts_generation)
        BEGIN UPDATE contacts_generation SET generation = generation + 1; END;
        """
    )


@migration
def m007_digest_definitions(db: Database) -> None:
    """What each vendor's `vendor_state.hash` is computed from, so that a change to it (a
    trigger vendor's `on_change`, an upsert vendor's mapping, syncd's digest) is seen as
    such: a trigger vendor is then re-baselined instead of surveying everyone."""
    db.executescript(
        """
        CREATE TABLE digest_definitions (
            vendor TEXT PRIMARY KEY,
            definition TEXT NOT NULL,           -- JSON: the digest version and mapping parts
            recorded_at TEXT NOT NULL,
            run_id INTEGER                      -- the reconcile that recorded it
        );
        """
    )


@migration
def m008_unsubscribes_untimed(db: Database) -> None:
    """An opt-out may come without a time (SignalVine): `unsubscribes.at` may be NULL.

    The view over the table is dropped around the rebuild and made again as m003 made it:
    renaming the rebuilt table into place re-checks the views, which some SQLite versions
    refuse while their table is missing."""
    db.execute("DROP VIEW unsubscribes_per_week")
    db.table("unsubscribes").transform(not_null={"at": False})
    db.execute(
        """
        CREATE VIEW unsubscribes_per_week AS
        SELECT strftime('%Y-W%W', at) AS week, vendor, channel, count(*) AS unsubscribes
        FROM unsubscribes GROUP BY week, vendor, channel
        """
    )


def _edit_definitions(db: Database, edits: dict[str, tuple[str, str]]) -> None:
    """Edit tables' stored CREATE TABLE in place (table → (text, its replacement)), by
    SQLite's own procedure for changes that leave every row as it is (sqlite.org, ALTER
    TABLE, "Making Other Kinds Of Table Schema Changes"): instant at any size, where a
    rebuild would copy every row and remake the views over the table. Each text must
    occur exactly once in its table's definition, else this is not the schema."""
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    db.execute("PRAGMA writable_schema = ON")
    for table, (text, replacement) in edits.items():
        sql = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()[0]
        assert sql.count(text) == 1, (table, text)
        db.execute(
            "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = ?",
            (text, replacement, table),
        )
    db.execute(f"PRAGMA schema_version = {version + 1}")
    db.execute("PRAGMA writable_schema = OFF")


@migration
def m009_retention(db: Database) -> None:
    """For `Store.prune`: a closed delivery's payload may be NULL, and deliveries are
    indexed by run.

    The NOT NULL goes by SQLite's own procedure for removing one in place (sqlite.org,
    ALTER TABLE, "Making Other Kinds Of Table Schema Changes"): the stored CREATE TABLE is
    edited and the schema version moved on. No row changes, so it is instant at any size,
    where a rebuild would copy every delivery and remake the four views over the table.
    The index: deleting a run makes SQLite look for deliveries naming it (the foreign key),
    a scan of every delivery without one; run ids only grow, so its upkeep is an append."""
    _edit_definitions(db, {"deliveries": ("payload TEXT NOT NULL,", "payload TEXT,")})
    db.execute("CREATE INDEX deliveries_run ON deliveries(run_id)")


@migration
def m010_analyst_views_indexed(db: Database) -> None:
    """The analysts' views answer in under a second at a million contacts (bench/
    bench_views.py), and mean what the README says.

    - `response_rate` counts contacts, not deliveries, and only at the vendors whose
      responses syncd pulls (a `responses` row in `cursors`): an upsert vendor is no longer
      listed at 0%. Each matched response is credited to the contact's latest survey at
      that vendor acknowledged at or before it was answered, so a contact surveyed twice
      and answering once counts as responding once. It did not finish at 50,000 contacts
      (every sent delivery scanned every response); two partial indexes over sent
      deliveries (the month's contacts in order; a contact's surveys by time) and one on
      `responses(vendor, key, answered_at)` make it two index walks.
    - `nps_over_time`: a period without respondents (the vendor says 0 for NPS and every
      share) is NULL, not an NPS of 0.
    - `contact_status` walks contacts in key order and each one's latest delivery per
      vendor by `deliveries_key`, instead of every delivery in id order with a lookup per
      row (30 s and more at a million contacts; its first rows now come at once).
    - `skipped_reasons` and the NPS answers (`nps_from_answers`, `answers_with_contact`
      filtered on `is_nps`) read partial indexes instead of whole tables.
    """
    db.executescript(
        """
        CREATE INDEX responses_key ON responses(vendor, key, answered_at);
        CREATE INDEX deliveries_sent_month ON deliveries(vendor, substr(sent_at, 1, 7), key)
            WHERE status = 'sent';
        CREATE INDEX deliveries_sent_key ON deliveries(vendor, key, sent_at)
            WHERE status = 'sent';
        CREATE INDEX deliveries_held ON deliveries(vendor, status, reason)
            WHERE status IN ('skipped', 'superseded');
        CREATE INDEX answers_nps ON answers(vendor, response_id, score) WHERE is_nps;

        DROP VIEW contact_status;
        CREATE VIEW contact_status AS
        SELECT c.key, d.vendor, d.status, d.reason, d.attempts, d.updated_at,
               vs.acked_at, vs.ref AS vendor_ref, c.gone_at
        FROM contacts c
        JOIN deliveries d ON d.id IN (SELECT max(id) FROM deliveries
                                      WHERE key = c.key GROUP BY vendor)
        LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = c.key;

        DROP VIEW nps_over_time;
        CREATE VIEW nps_over_time AS
        SELECT vendor, filter, period_start, period_end,
               CASE WHEN answered THEN nps END AS nps,
               CASE WHEN answered THEN promoters END AS promoters,
               CASE WHEN answered THEN passives END AS passives,
               CASE WHEN answered THEN detractors END AS detractors
        FROM (SELECT *, coalesce(promoters, 0) + coalesce(passives, 0)
                        + coalesce(detractors, 0) > 0 AS answered FROM nps)
        ORDER BY vendor, filter, period_start;

        DROP VIEW response_rate;
        CREATE VIEW response_rate AS
        WITH surveyed AS (
            SELECT vendor, substr(sent_at, 1, 7) AS month, count(DISTINCT key) AS sent
            FROM deliveries
            WHERE status = 'sent'
              AND vendor IN (SELECT vendor FROM cursors WHERE stream = 'responses')
            GROUP BY vendor, substr(sent_at, 1, 7)),
        answered AS MATERIALIZED (
            -- the survey each matched response answers: the latest acknowledged before it
            SELECT r.vendor, r.key,
                   (SELECT max(d.sent_at) FROM deliveries d
                    WHERE d.status = 'sent' AND d.vendor = r.vendor AND d.key = r.key
                      AND d.sent_at <= r.answered_at) AS sent_at
            FROM responses r
            WHERE r.key IS NOT NULL AND r.answered_at IS NOT NULL
              AND r.vendor IN (SELECT vendor FROM cursors WHERE stream = 'responses')),
        responded AS (
            SELECT vendor, substr(sent_at, 1, 7) AS month, count(DISTINCT key) AS responded
            FROM answered WHERE sent_at IS NOT NULL GROUP BY vendor, month)
        SELECT s.vendor, s.month, s.sent, coalesce(a.responded, 0) AS responded,
               round(100.0 * coalesce(a.responded, 0) / s.sent, 1) AS rate_percent
        FROM surveyed s LEFT JOIN responded a ON a.vendor = s.vendor AND a.month = s.month
        ORDER BY s.vendor, s.month;
        """
    )


@migration
def m011_contact_status_filters(db: Database) -> None:
    """`contact_status` answers a filter on vendor and status in a tenth of a second at a
    million contacts, where m010's view took minutes (SQLite built an automatic index over
    every delivery and searched it once per contact; bench/bench_views.py).

    The view is now three arms, one per kind of status, and SQLite pushes an analyst's
    `WHERE` into each arm: the open statuses come from `deliveries_open`, `skipped` and
    `superseded` from `deliveries_held` (both partial indexes already kept for `syncd
    status` and `skipped_reasons`), each checked to be the contact's latest delivery to
    that vendor by `deliveries_key`; `sent`, most of the ledger, is still m010's walk of
    contacts in key order, and says `'sent'` as a constant, so a filter on another status
    skips that arm before it reads a row. No index is added: the push updates statuses
    constantly. The vendor and status terms of the `sent` arm are written `+d.vendor` and
    `+d.status` so that SQLite reaches deliveries only through each contact's latest ids.
    Rows come open work first, then held back, then sent; the meaning (each contact's
    latest delivery per vendor) is m010's, tested against it row for row.
    """
    db.executescript(
        """
        DROP VIEW contact_status;
        CREATE VIEW contact_status AS
        SELECT c.key, d.vendor, d.status, d.reason, d.attempts, d.updated_at,
               vs.acked_at, vs.ref AS vendor_ref, c.gone_at
        FROM deliveries d
        JOIN contacts c ON c.key = d.key
        LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key
        WHERE d.status IN ('pending', 'in_flight', 'failed', 'unknown', 'dead')
          AND NOT EXISTS (SELECT 1 FROM deliveries n
                          WHERE n.key = d.key AND n.vendor = d.vendor AND n.id > d.id)
        UNION ALL
        SELECT c.key, d.vendor, d.status, d.reason, d.attempts, d.updated_at,
               vs.acked_at, vs.ref AS vendor_ref, c.gone_at
        FROM deliveries d
        JOIN contacts c ON c.key = d.key
        LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key
        WHERE d.status IN ('skipped', 'superseded')
          AND NOT EXISTS (SELECT 1 FROM deliveries n
                          WHERE n.key = d.key AND n.vendor = d.vendor AND n.id > d.id)
        UNION ALL
        SELECT c.key, +d.vendor, 'sent', d.reason, d.attempts, d.updated_at,
               vs.acked_at, vs.ref AS vendor_ref, c.gone_at
        FROM contacts c
        JOIN deliveries d ON d.id IN (SELECT max(id) FROM deliveries
                                      WHERE key = c.key GROUP BY vendor)
        LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = c.key
        WHERE +d.status = 'sent';
        """
    )


@migration
def m012_integer_digests(db: Database) -> None:
    """`vendor_state.hash` and `deliveries.hash` hold syncd's digests as they come: a
    64-bit integer from digest version 2 on (8 bytes where 40 hex digits took 41), text
    for a version-1 digest made before (`syncd.project.digest`; the diff converts those
    as it meets them).

    The columns lose their `TEXT` type, which would store an integer as its decimal text,
    in place (`_edit_definitions`): no row changes, so it is instant at any size; no index
    or view depends on the columns' type.
    """
    edit = ("hash TEXT NOT NULL", "hash NOT NULL")
    _edit_definitions(db, {"vendor_state": edit, "deliveries": edit})


@migration
def m013_unsubscribes_reach(db: Database) -> None:
    """Unsubscribes are indexed by email and phone too: the diff looks up each chunk of
    changed rows' keys, emails and phones (`DiffStore.suppressions`), and without these
    the OR of the three scanned every unsubscribe once per chunk (SQLite's OR
    optimisation needs an index for each term)."""
    db.executescript(
        """
        CREATE INDEX unsubscribes_email ON unsubscribes(email) WHERE email IS NOT NULL;
        CREATE INDEX unsubscribes_phone ON unsubscribes(phone) WHERE phone IS NOT NULL;
        """
    )


@migration
def m014_first_sync_pieces(db: Database) -> None:
    """A first sync commits as it goes, so its WAL stays bounded (a 1M-contact first sync
    in one transaction grew it to 0.9 GB, 3 GB at 3M): the row here names the run whose
    diff has committed pieces but not finished. While it exists nothing of that diff is
    sent; the next run undoes it (`Store.undo_first_sync`) before anything else, as a
    failed run does at once, so a first sync is still all or nothing."""
    db.execute("CREATE TABLE unfinished_diff (run_id INTEGER PRIMARY KEY REFERENCES runs(id))")


@migration
def m015_export_header(db: Database) -> None:
    """The header of the last export diffed: the names `contacts.attributes` are keyed by,
    and the names the fingerprints were salted with (`syncd.project.salted`), so a column
    renamed in the CRM that nothing reads is renamed in `contacts.attributes` by one
    statement instead of every row being looked at again (33x a bare read of the export).
    """
    db.execute(
        "CREATE TABLE export_header (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "named TEXT NOT NULL, salted TEXT NOT NULL)"
    )


@migration
def m016_fingerprint_cache_two_rows(db: Database) -> None:
    """The fingerprint cache may hold two rows (id 1 or 2) inside the diff's transaction:
    the next cache is written a slice at a time into the other row while the rowids are
    read from the current one, which is then deleted (`DiffStore.write_cache`). Replacing
    the row in place would drop the blob being read, and holding all of it in memory
    first was 16 bytes a contact. A committed store still holds one row: the current one
    is the one written at the current generation.

    The CHECK is relaxed in place (`_edit_definitions`): the row there stays as it is.
    """
    _edit_definitions(
        db,
        {
            "fingerprint_cache": (
                "id INTEGER PRIMARY KEY CHECK (id = 1)",
                "id INTEGER PRIMARY KEY CHECK (id IN (1, 2))",
            )
        },
    )


@migration
def m017_views_as_documented(db: Database) -> None:
    """Two views say what the README says (tests/test_views_oracle.py holds every view to
    an oracle built from its documentation):

    - `nps_over_time` is NULL for a period only when the vendor reports 0 (or nothing) for
      the NPS and every share. m010 looked at the shares alone, so a period whose NPS came
      without shares (Hello Customer's fields are each optional) lost its NPS.
    - `response_rate` lists months only: a `sent` delivery without a `sent_at` has no
      month, and m010 listed such surveys as a month of NULL at 0%. The row goes at the
      end, so the view still walks `deliveries_sent_month` as before.
    """
    db.executescript(
        """
        DROP VIEW nps_over_time;
        CREATE VIEW nps_over_time AS
        SELECT vendor, filter, period_start, period_end,
               CASE WHEN answered THEN nps END AS nps,
               CASE WHEN answered THEN promoters END AS promoters,
               CASE WHEN answered THEN passives END AS passives,
               CASE WHEN answered THEN detractors END AS detractors
        FROM (SELECT *, NOT (coalesce(nps, 0) = 0 AND coalesce(promoters, 0) = 0
                             AND coalesce(passives, 0) = 0 AND coalesce(detractors, 0) = 0)
                        AS answered FROM nps)
        ORDER BY vendor, filter, period_start;

        DROP VIEW response_rate;
        CREATE VIEW response_rate AS
        WITH surveyed AS (
            SELECT vendor, substr(sent_at, 1, 7) AS month, count(DISTINCT key) AS sent
            FROM deliveries
            WHERE status = 'sent'
              AND vendor IN (SELECT vendor FROM cursors WHERE stream = 'responses')
            GROUP BY vendor, substr(sent_at, 1, 7)),
        answered AS MATERIALIZED (
            -- the survey each matched response answers: the latest acknowledged before it
            SELECT r.vendor, r.key,
                   (SELECT max(d.sent_at) FROM deliveries d
                    WHERE d.status = 'sent' AND d.vendor = r.vendor AND d.key = r.key
                      AND d.sent_at <= r.answered_at) AS sent_at
            FROM responses r
            WHERE r.key IS NOT NULL AND r.answered_at IS NOT NULL
              AND r.vendor IN (SELECT vendor FROM cursors WHERE stream = 'responses')),
        responded AS (
            SELECT vendor, substr(sent_at, 1, 7) AS month, count(DISTINCT key) AS responded
            FROM answered WHERE sent_at IS NOT NULL GROUP BY vendor, month)
        SELECT s.vendor, s.month, s.sent, coalesce(a.responded, 0) AS responded,
               round(100.0 * coalesce(a.responded, 0) / s.sent, 1) AS rate_percent
        FROM surveyed s LEFT JOIN responded a ON a.vendor = s.vendor AND a.month = s.month
        WHERE s.month IS NOT NULL
        ORDER BY s.vendor, s.month;
        """
    )


@migration
def m018_pulled_times_as_the_store_writes_them(db: Database) -> None:
    """Pulled times are stored as syncd writes its own (UTC, `YYYY-MM-DDTHH:MM:SS+00:00`):
    `response_rate` and `nps_from_answers` compare and cut them as text against
    `deliveries.sent_at`, and a vendor's `Z`, milliseconds, space or other offset sorted
    wrongly against it (a response in the same second as its survey was not credited).
    The pull writes them so from now on (`syncd.pull._when`); this converts what is stored.
    SQLite reads every ISO 8601 form the pull does; a text it cannot read stays as it is.

    Only a text that starts as an ISO date does (`GLOB`, as m022): SQLite's date functions
    also take a bare number for a Julian day, `now` for the moment of the upgrade and
    `12:30` for 2000-01-01, and such a vendor's text was lost. This condition was added
    after m018 shipped, a departure from never editing a migration: a store that applied
    the first form is not touched again, and one not yet past m018 keeps those texts.
    """
    utc = "strftime('%Y-%m-%dT%H:%M:%S+00:00', {0})"
    for table, columns in (
        ("responses", ("surveyed_at", "answered_at")),
        ("unsubscribes", ("at",)),
    ):
        for column in columns:
            db.execute(
                f"UPDATE {table} SET {column} = coalesce({utc.format(column)}, {column}) "
                f"WHERE {column} GLOB '[0-9][0-9][0-9][0-9]-*' "
                f"AND {column} IS NOT {utc.format(column)}"
            )


@migration
def m019_show_indexes(db: Database) -> None:
    """`syncd show KEY|EMAIL` reads one contact's quarantined rows and survey responses
    through indexes; both were whole-table scans, the quarantine growing by a bad export's
    rows at every reconcile. Responses by key already have `responses_key` (vendor, key,
    ...), which the query reaches vendor by vendor; what was left:

    - `quarantine_key`: a contact's quarantined rows, and whether a key was ever quarantined.
    - `responses_unmatched_email`: the responses pulled before their contact was known (no
      key), by email; partial, so it holds only those.
    """
    db.executescript(
        """
        CREATE INDEX quarantine_key ON quarantine(key);
        CREATE INDEX responses_unmatched_email ON responses(email) WHERE key IS NULL;
        """
    )


@migration
def m020_runs_delivered(db: Database) -> None:
    """`runs.delivered`: the vendors a reconcile ran the delivery loop for (a JSON array),
    written as it begins; NULL when it sent nothing (a dry run, `--baseline`, a refusal)
    and for other runs. A trigger vendor that acknowledged no contact yet is let start the
    service when a sync that delivered to it queued its sends, or found them queued (it
    was down): the operator asked for them (`syncd.daemon.unbaselined`)."""
    db.execute("ALTER TABLE runs ADD COLUMN delivered TEXT")


# the counts only a reconcile's delivery loop writes into `runs.counts` (the diff's are
# new, changed, unchanged, skipped, quarantined, gone, already_..., baseline...), in every
# release so far (78ff7f4, bbb5e07 and a105efb as much as today's), and the reason it stopped
DELIVERY_COUNTS = ("sent", "failed", "unknown", "pending", "superseded", "dead")


@migration
def m021_runs_delivered_before_m020(db: Database) -> None:
    """`runs.delivered` for the reconciles from before m020, where the run's own counts
    prove that its delivery loop ran for the vendor: a count only that loop writes
    (`DELIVERY_COUNTS`) or the reason it stopped. A trigger vendor down at an old store's
    first sync has `stopped` there: its queued surveys were asked for, and the service may
    start (`syncd.daemon.unbaselined`). A dry run, `--baseline`, a refusal or a vendor left
    out by `--vendor` has the diff's counts only, and a run killed before it recorded its
    counts has none: those stay NULL, and the vendor is still refused."""
    names = ", ".join(f"'{n}'" for n in DELIVERY_COUNTS)
    db.execute(
        "UPDATE runs SET delivered = (SELECT nullif(json_group_array(v.key), '[]') "
        "FROM json_each(runs.counts) v WHERE v.type = 'object' AND EXISTS "
        "(SELECT 1 FROM json_each(v.value) c WHERE c.key = 'stopped' "
        f"OR (c.key IN ({names}) AND c.type = 'integer' AND c.value > 0))) "
        "WHERE kind = 'reconcile' AND delivered IS NULL AND json_valid(counts) "
        "AND json_type(counts) = 'object'"
    )


# an answer on the NPS scale: a whole number from 0 to 10
NPS_SCALE = "IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)"


@migration
def m022_views_on_vendor_data(db: Database) -> None:
    """Two views mean what the README says on whatever a vendor sends (tests/
    test_views_oracle.py); only their definitions change, over m020's schema.

    - `nps_from_answers` counts an NPS answer only on the NPS scale (a whole score from 0
      to 10), so that its promoters, passives and detractors add up to its answers: m010
      counted an 8.5 as an answer of no kind and an 11 as a promoter. Its month is NULL for
      an answer time the pull kept as the vendor sent it (it did not read as ISO 8601: a
      .NET `/Date(1769903999000)/`, `31/01/2026 23:30`, seconds since 1970), where m010
      cut the text (`/Date(1`, `31/01/2`). The month is checked once per group, not per
      answer: the answers are grouped by their cut text as in m010, then the cuts that are
      no month merged into one NULL month, so the view reads its rows as fast as m010's.
    - `response_rate` credits no survey with a response whose answer time is not a time
      (does not start with a year and a dash): m010 compared the vendor's text with
      `sent_at`, and `31/01/2026 23:30` sorts after every survey there is.
    """
    db.executescript(
        f"""
        DROP VIEW nps_from_answers;
        CREATE VIEW nps_from_answers AS
        SELECT vendor, CASE WHEN cut GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]' THEN cut END AS month,
               sum(answers) AS answers,
               round(100.0 * (sum(promoters) - sum(detractors)) / sum(answers), 1) AS nps,
               sum(promoters) AS promoters, sum(passives) AS passives,
               sum(detractors) AS detractors
        FROM (SELECT a.vendor, substr(r.answered_at, 1, 7) AS cut, count(*) AS answers,
                     sum(a.score >= 9) AS promoters, sum(a.score BETWEEN 7 AND 8) AS passives,
                     sum(a.score <= 6) AS detractors
              FROM answers a
              JOIN responses r ON r.vendor = a.vendor AND r.response_id = a.response_id
              WHERE a.is_nps AND a.score {NPS_SCALE}
              GROUP BY a.vendor, cut)
        GROUP BY vendor, 2;

        DROP VIEW response_rate;
        CREATE VIEW response_rate AS
        WITH surveyed AS (
            SELECT vendor, substr(sent_at, 1, 7) AS month, count(DISTINCT key) AS sent
            FROM deliveries
            WHERE status = 'sent'
              AND vendor IN (SELECT vendor FROM cursors WHERE stream = 'responses')
            GROUP BY vendor, substr(sent_at, 1, 7)),
        answered AS MATERIALIZED (
            -- the survey each matched response answers: the latest acknowledged before it
            SELECT r.vendor, r.key,
                   (SELECT max(d.sent_at) FROM deliveries d
                    WHERE d.status = 'sent' AND d.vendor = r.vendor AND d.key = r.key
                      AND d.sent_at <= r.answered_at) AS sent_at
            FROM responses r
            WHERE r.key IS NOT NULL AND r.answered_at GLOB '[0-9][0-9][0-9][0-9]-*'
              AND r.vendor IN (SELECT vendor FROM cursors WHERE stream = 'responses')),
        responded AS (
            SELECT vendor, substr(sent_at, 1, 7) AS month, count(DISTINCT key) AS responded
            FROM answered WHERE sent_at IS NOT NULL GROUP BY vendor, month)
        SELECT s.vendor, s.month, s.sent, coalesce(a.responded, 0) AS responded,
               round(100.0 * coalesce(a.responded, 0) / s.sent, 1) AS rate_percent
        FROM surveyed s LEFT JOIN responded a ON a.vendor = s.vendor AND a.month = s.month
        WHERE s.month IS NOT NULL
        ORDER BY s.vendor, s.month;
        """
    )


@migration
def m023_contacts_phone(db: Database) -> None:
    """`contacts_phone`: a pulled opt-out or response matched by phone (`match_key`, when
    neither our key nor an email matched) searched every contact, one scan per record (a
    pull of 1,000 SMS opt-outs at 200k contacts: 19 s). Partial: a contact without a phone
    costs it nothing."""
    db.execute("CREATE INDEX contacts_phone ON contacts(phone) WHERE phone IS NOT NULL")


@migration
def m024_unsubscribes_reach_as_compared(db: Database) -> None:
    """Opt-outs pulled before the pull stored them as the suppression compares them
    (`syncd.state.pulled.reach`: the email trimmed as well as lower-cased, the phone E.164
    where it reads as an international number) are converted: a padded email or spaced
    phone pulled before its contact was exported never held that contact back. In Python,
    with the contacts' own normalisers (SQL's `trim` and `lower` know spaces and ASCII
    only); an opt-out table is small.

    Only text is converted: an email or phone stored as a BLOB (only a hand edit makes one)
    is left as it is, as is the other of the two beside it. It stopped the upgrade with a
    TypeError, and no syncd started on the store. This was added after m024 shipped, a
    departure from never editing a migration: a store m024 ran on held no BLOB there (it
    did not finish on one), so every store that applied it applied this."""
    from syncd.state.pulled import reach

    def as_compared(email: object, phone: object) -> tuple[object, object]:
        now = reach(*(v if isinstance(v, str) else None for v in (email, phone)))
        return (
            now[0] if isinstance(email, str) else email,
            now[1] if isinstance(phone, str) else phone,
        )

    rows = db.execute("SELECT rowid, email, phone FROM unsubscribes").fetchall()
    db.conn.executemany(
        "UPDATE unsubscribes SET email = ?, phone = ? WHERE rowid = ?",
        [
            (*now, rowid)
            for rowid, email, phone in rows
            if (now := as_compared(email, phone)) != (email, phone)
        ],
    )
