-- 0004_events_seq: an event's seq is read from the events themselves under
-- the run row's lock (see include/events.h), so the run no longer keeps a
-- copy of its newest seq: one write less per event.

ALTER TABLE agent_runs DROP COLUMN IF EXISTS last_event_seq;
