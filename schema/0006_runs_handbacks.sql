-- 0006_runs_handbacks: a runner that stops in an orderly way (SIGTERM, a
-- deploy) hands its runs back at once. Those claims are no runner dying, so
-- they must not use up runner_max_attempts: the runner counts them here and
-- gives up on a run only after attempt - handbacks lost claims.

ALTER TABLE agent_runs
  ADD COLUMN IF NOT EXISTS handbacks INT UNSIGNED NOT NULL DEFAULT 0
    COMMENT 'claims handed back by a runner stopping in order; not lost attempts'
    AFTER attempt;
