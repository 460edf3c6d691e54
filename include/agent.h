/*
 * agent.h - executes one claimed run in a kiln-runner child process: the
 * model loop (stream a response, run its tool calls in the app's
 * workspace, repeat), the run's events, and its ending (revision,
 * checkpoint, terminal event). Resumes a run from its durable thread when
 * an earlier attempt died.
 *
 *   agent_profile_load   system prompt, model, temperature, step cap, tools
 *   agent_execute_run    the whole run; returns when it ended or the lease
 *                        was lost
 */
#ifndef KILN_AGENT_H
#define KILN_AGENT_H

#include <signal.h>
#include <stdint.h>

#include <json.h>

struct config;
struct strbuf;

struct agent_profile {
	char *system_prompt;
	char *model;           /* NULL = the configured model */
	double temperature;
	int max_steps;
	int max_output_tokens;
	char **tools;          /* NULL-terminated names */
};

int agent_profile_load(const struct config *cfg, int64_t app_id, struct agent_profile *p,
		       struct strbuf *err);
void agent_profile_release(struct agent_profile *p);

/* 0 when the run reached a terminal state (or is no longer ours), -1 on an
 * infrastructure failure (the lease then lapses and the run is resumed). */
int agent_execute_run(struct config *cfg, int64_t run_id, const char *runner_id,
		      volatile sig_atomic_t *cancel);

#endif
