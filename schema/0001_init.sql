-- 0001_init: tenants, tokens, apps and revisions.
-- Applied once by `kilnctl migrate`, which records it in schema_migrations.
-- Every statement of every migration is safe to run again (IF NOT EXISTS,
-- IF EXISTS): MariaDB commits DDL at once, so a file that failed half-way
-- is run again from its first statement (see include/migrate.h).

CREATE TABLE IF NOT EXISTS organizations (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'organization id',
  slug        VARCHAR(63)  NOT NULL COMMENT 'url-safe name, used in publish URLs',
  name        VARCHAR(200) NOT NULL COMMENT 'display name',
  created_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_organizations_slug (slug)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Tenants: every app and token belongs to one';

CREATE TABLE IF NOT EXISTS api_tokens (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  org_id       BIGINT UNSIGNED NOT NULL COMMENT 'organization the token acts for',
  name         VARCHAR(200) NOT NULL DEFAULT '' COMMENT 'what the token is for',
  prefix       CHAR(13)     NOT NULL COMMENT 'first characters of the token, to recognise it (not secret)',
  token_sha256 CHAR(64)     NOT NULL COMMENT 'hex SHA-256 of the whole token; the token itself is never stored',
  created_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at   DATETIME(3)  NULL COMMENT 'NULL = never expires',
  revoked_at   DATETIME(3)  NULL COMMENT 'set by kilnctl token revoke',
  last_used_at DATETIME(3)  NULL COMMENT 'updated at most once a minute per token',
  PRIMARY KEY (id),
  UNIQUE KEY uq_api_tokens_hash (token_sha256),
  KEY ix_api_tokens_org (org_id),
  CONSTRAINT fk_api_tokens_org FOREIGN KEY (org_id) REFERENCES organizations (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Bearer tokens of the admin API, stored as hashes only';

CREATE TABLE IF NOT EXISTS apps (
  id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  org_id            BIGINT UNSIGNED NOT NULL,
  slug              VARCHAR(63)  NOT NULL COMMENT 'unique per organization',
  name              VARCHAR(200) NOT NULL,
  draft_revision_id BIGINT UNSIGNED NULL COMMENT 'current draft revision (matches the workspace when no run is active)',
  created_at        DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at        DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_apps_org_slug (org_id, slug),
  CONSTRAINT fk_apps_org FOREIGN KEY (org_id) REFERENCES organizations (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Apps built with the coding agent';

CREATE TABLE IF NOT EXISTS app_revisions (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  app_id        BIGINT UNSIGNED NOT NULL,
  parent_id     BIGINT UNSIGNED NULL COMMENT 'previous draft revision',
  origin        ENUM('manual','run','restore') NOT NULL COMMENT 'manual = uploaded through the API',
  run_id        BIGINT UNSIGNED NULL COMMENT 'run that produced it (origin run)',
  checkpoint_id BIGINT UNSIGNED NULL COMMENT 'checkpoint holding its files',
  manifest      LONGTEXT NOT NULL COMMENT 'JSON array of {path,size,sha256}',
  file_count    INT UNSIGNED NOT NULL,
  total_size    BIGINT UNSIGNED NOT NULL,
  created_at    DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  KEY ix_app_revisions_app (app_id, id),
  CONSTRAINT fk_app_revisions_app FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Immutable file states of an app';
