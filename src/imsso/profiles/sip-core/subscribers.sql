-- imsso sip-core: the subscriber database of an instance (SQLite).
-- Tables as Kamailio 5.6 db_sqlite / auth_db expect them (kamailio standard-create.sql and
-- auth_db-create.sql): "version" with the table versions, and "subscriber" (table version 7).
-- The S-CSCFs read it (read-only) at every authentication, with calculate_ha1 = 0: "ha1" holds
-- MD5(username:domain:password) and "ha1b" MD5(username@domain:domain:password); "password" stays
-- empty (the orchestrator keeps no password for this profile).
-- Idempotent: can be applied to an existing file.

-- Write-ahead log: the orchestrator's writes never block Kamailio's reads (db_sqlite sets no busy
-- timeout: in the default rollback-journal mode a read that meets a commit fails at once).
-- Persistent in the file; the folder must stay writable for the -wal/-shm files.
PRAGMA journal_mode = WAL;

CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);

INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('version', 1);

CREATE TABLE IF NOT EXISTS subscriber (
    id INTEGER PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
);

CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username);

INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('subscriber', 7);
