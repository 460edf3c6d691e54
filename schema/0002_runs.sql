-- 0002_runs: the detached job table of coding-agent runs, their events and
-- the per-app conversation thread.

CREATE TABLE IF NOT EXISTS agent_runs (
  id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  app_id            BIGINT UNSIGNED NOT NULL,
  org_id            BIGINT UNSIGNED NOT NULL,
  input             MEDIUMTEXT NOT NULL COMMENT 'the admin''s message',
  client_request_id VARCHAR(128) NULL COMMENT 'idempotency key from the client',
  request_sha256    CHAR(64) NOT NULL COMMENT 'hash of the request body, to detect a reused key with another body',
  status            ENUM('queued','running','completed','failed','cancelled') NOT NULL DEFAULT 'queued',
  active_app_id     BIGINT UNSIGNED GENERATED ALWAYS AS (IF(status IN ('queued','running'), app_id, NULL)) STORED
                    COMMENT 'unique: at most one active run per app',
  attempt           INT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'times a runner claimed it',
  lease_owner       VARCHAR(128) NULL COMMENT 'runner id holding the lease',
  lease_expires_at  DATETIME(3) NULL,
  cancel_requested  TINYINT(1) NOT NULL DEFAULT 0,
  cancel_mode       ENUM('keep','rollback') NOT NULL DEFAULT 'keep',
  last_event_seq    INT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'seq of its newest event; event seqs are assigned under this row''s lock',
  error_code        VARCHAR(64) NULL,
  error_message     VARCHAR(1024) NULL,
  prompt_tokens     BIGINT UNSIGNED NOT NULL DEFAULT 0,
  completion_tokens BIGINT UNSIGNED NOT NULL DEFAULT 0,
  steps             INT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'model responses completed',
  base_revision_id  BIGINT UNSIGNED NULL COMMENT 'draft revision when the run started',
  base_checkpoint_id BIGINT UNSIGNED NULL COMMENT 'checkpoint of the workspace before the run',
  revision_id       BIGINT UNSIGNED NULL COMMENT 'revision it produced',
  checkpoint_id     BIGINT UNSIGNED NULL COMMENT 'checkpoint it produced',
  created_at        DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  started_at        DATETIME(3) NULL,
  finished_at       DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_agent_runs_active (active_app_id),
  UNIQUE KEY uq_agent_runs_client_req (app_id, client_request_id),
  KEY ix_agent_runs_claim (status, lease_expires_at),
  KEY ix_agent_runs_app (app_id, id),
  CONSTRAINT fk_agent_runs_app FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Coding-agent runs: a detached job table claimed by kiln-runner';

CREATE TABLE IF NOT EXISTS agent_run_events (
  run_id     BIGINT UNSIGNED NOT NULL,
  seq        INT UNSIGNED NOT NULL COMMENT 'gapless per run from 1',
  type       VARCHAR(32) NOT NULL,
  payload    MEDIUMTEXT NOT NULL COMMENT 'JSON',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (run_id, seq),
  CONSTRAINT fk_agent_run_events_run FOREIGN KEY (run_id) REFERENCES agent_runs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Typed events of each run, streamed to clients as SSE';

CREATE TABLE IF NOT EXISTS agent_messages (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  app_id       BIGINT UNSIGNED NOT NULL COMMENT 'the conversation thread is per app',
  run_id       BIGINT UNSIGNED NOT NULL,
  step         INT UNSIGNED NOT NULL COMMENT 'model response index within the run (0 = the user message)',
  role         ENUM('user','assistant','tool') NOT NULL,
  content      MEDIUMTEXT NULL,
  tool_calls   MEDIUMTEXT NULL COMMENT 'JSON array, assistant messages only',
  tool_call_id VARCHAR(128) NULL COMMENT 'tool messages only',
  created_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  KEY ix_agent_messages_app (app_id, id),
  KEY ix_agent_messages_run (run_id, id),
  CONSTRAINT fk_agent_messages_app FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Durable agent state: the conversation thread, written after every step';
