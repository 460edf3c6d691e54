-- 0003_checkpoints: tar checkpoints and publishes.

CREATE TABLE IF NOT EXISTS checkpoints (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  app_id       BIGINT UNSIGNED NOT NULL,
  run_id       BIGINT UNSIGNED NULL,
  revision_id  BIGINT UNSIGNED NULL COMMENT 'revision whose files it holds',
  type         ENUM('auto','restore','manual') NOT NULL,
  label        VARCHAR(200) NOT NULL DEFAULT '',
  summary      VARCHAR(1024) NOT NULL DEFAULT '' COMMENT 'what the run did, in one line',
  archive      VARCHAR(255) NOT NULL COMMENT 'archive file relative to <state>/checkpoints',
  sha256       CHAR(64) NOT NULL COMMENT 'of the archive file',
  size         BIGINT UNSIGNED NOT NULL COMMENT 'archive bytes',
  file_count   INT UNSIGNED NOT NULL,
  created_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  KEY ix_checkpoints_app (app_id, id),
  CONSTRAINT fk_checkpoints_app FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Checkpoints: tar archives on disk referenced from here (archive written first)';

CREATE TABLE IF NOT EXISTS publishes (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  app_id          BIGINT UNSIGNED NOT NULL,
  revision_id     BIGINT UNSIGNED NOT NULL,
  artifact_sha256 CHAR(64) NOT NULL COMMENT 'hash over the published tree''s manifest',
  built           TINYINT(1) NOT NULL COMMENT '1 when a build script ran',
  token_id        BIGINT UNSIGNED NULL COMMENT 'who published',
  created_at      DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  KEY ix_publishes_app (app_id, id),
  CONSTRAINT fk_publishes_app FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Every publish of an app (the newest is live)';

ALTER TABLE apps
  ADD COLUMN IF NOT EXISTS published_revision_id BIGINT UNSIGNED NULL COMMENT 'revision served at the publish URL' AFTER draft_revision_id;
