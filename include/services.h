/*
 * services.h - the per-process services of kiln-api workers: configuration,
 * the database connection and the checkpoint store, set up after fork().
 *
 *   services_init / services_release
 *   services_secret_ensure   create <state>/secret once (before forking)
 *   state_path               "<state_dir>/<fmt...>"
 *   app_workspace_path       "<state_dir>/workspaces/<app_id>"
 */
#ifndef KILN_SERVICES_H
#define KILN_SERVICES_H

#include <stdint.h>

struct services;
struct config;
struct strbuf;

int services_init(struct services *svc, struct config *cfg, struct strbuf *err);
void services_release(struct services *svc);
int services_secret_ensure(const struct config *cfg, unsigned char secret[32],
			   struct strbuf *err);
void state_path(const struct config *cfg, struct strbuf *out, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void app_workspace_path(const struct config *cfg, int64_t app_id, struct strbuf *out);

#endif
