-- 0005_column_comments: every column says what it holds, so the schema
-- reads well in a database admin tool. Each MODIFY repeats the column's
-- definition exactly (type, NULL, default, AUTO_INCREMENT, ON UPDATE) and
-- only adds the COMMENT: MariaDB changes the metadata, no row is rewritten.
-- Safe to run again: the same statement leaves the same table.

ALTER TABLE organizations
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the organization was created (UTC)';

ALTER TABLE api_tokens
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'token id, as kilnctl token list shows it',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the token was issued (UTC)';

ALTER TABLE apps
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'app id, also the name of its workspace folder',
  MODIFY COLUMN org_id BIGINT UNSIGNED NOT NULL COMMENT 'organization the app belongs to',
  MODIFY COLUMN name VARCHAR(200) NOT NULL COMMENT 'display name',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the app was created (UTC)',
  MODIFY COLUMN updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3) COMMENT 'last change of the row (UTC)';

ALTER TABLE app_revisions
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'revision id',
  MODIFY COLUMN app_id BIGINT UNSIGNED NOT NULL COMMENT 'app whose files these are',
  MODIFY COLUMN file_count INT UNSIGNED NOT NULL COMMENT 'files in the manifest',
  MODIFY COLUMN total_size BIGINT UNSIGNED NOT NULL COMMENT 'bytes of all files in the manifest',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the revision was recorded (UTC)';

ALTER TABLE agent_runs
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'run id',
  MODIFY COLUMN app_id BIGINT UNSIGNED NOT NULL COMMENT 'app the run works on',
  MODIFY COLUMN org_id BIGINT UNSIGNED NOT NULL COMMENT 'organization of the app, copied for tenancy checks',
  MODIFY COLUMN status ENUM('queued','running','completed','failed','cancelled') NOT NULL DEFAULT 'queued' COMMENT 'queued, then running, then one of the three ends',
  MODIFY COLUMN lease_expires_at DATETIME(3) NULL COMMENT 'the lease holder must renew before this (UTC); later, another runner may resume the run',
  MODIFY COLUMN cancel_requested TINYINT(1) NOT NULL DEFAULT 0 COMMENT '1 once a cancel was asked for',
  MODIFY COLUMN cancel_mode ENUM('keep','rollback') NOT NULL DEFAULT 'keep' COMMENT 'on cancel: keep the changed files or restore the base checkpoint',
  MODIFY COLUMN error_code VARCHAR(64) NULL COMMENT 'machine code of a failure (runner_lost, model_error, ...)',
  MODIFY COLUMN error_message VARCHAR(1024) NULL COMMENT 'human description of a failure',
  MODIFY COLUMN prompt_tokens BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'model input tokens used, over all steps',
  MODIFY COLUMN completion_tokens BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'model output tokens used, over all steps',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the run was accepted (UTC)',
  MODIFY COLUMN started_at DATETIME(3) NULL COMMENT 'when a runner first claimed it (UTC)',
  MODIFY COLUMN finished_at DATETIME(3) NULL COMMENT 'when it reached its end state (UTC)';

ALTER TABLE agent_run_events
  MODIFY COLUMN run_id BIGINT UNSIGNED NOT NULL COMMENT 'run the event belongs to',
  MODIFY COLUMN type VARCHAR(32) NOT NULL COMMENT 'event type (run.accepted, assistant.delta, tool.started, ...)',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the event was written (UTC)';

ALTER TABLE agent_messages
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'message id; the thread is read in id order',
  MODIFY COLUMN run_id BIGINT UNSIGNED NOT NULL COMMENT 'run that wrote the message',
  MODIFY COLUMN role ENUM('user','assistant','tool') NOT NULL COMMENT 'who speaks: the admin, the model, or a tool result',
  MODIFY COLUMN content MEDIUMTEXT NULL COMMENT 'message text (NULL for an assistant message of tool calls only)',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the message was stored (UTC)';

ALTER TABLE checkpoints
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'checkpoint id',
  MODIFY COLUMN app_id BIGINT UNSIGNED NOT NULL COMMENT 'app whose files it holds',
  MODIFY COLUMN run_id BIGINT UNSIGNED NULL COMMENT 'run that made it (NULL for uploads and restores)',
  MODIFY COLUMN type ENUM('auto','restore','manual') NOT NULL COMMENT 'auto = end of a run, restore = a restore or revert, manual = an upload',
  MODIFY COLUMN label VARCHAR(200) NOT NULL DEFAULT '' COMMENT 'short title shown in lists',
  MODIFY COLUMN file_count INT UNSIGNED NOT NULL COMMENT 'files in the archive',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when the checkpoint was recorded (UTC)';

ALTER TABLE publishes
  MODIFY COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'publish id',
  MODIFY COLUMN app_id BIGINT UNSIGNED NOT NULL COMMENT 'app that was published',
  MODIFY COLUMN revision_id BIGINT UNSIGNED NOT NULL COMMENT 'revision that was published',
  MODIFY COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when it went live (UTC)';

ALTER TABLE schema_migrations
  MODIFY COLUMN applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT 'when kilnctl migrate recorded it';
